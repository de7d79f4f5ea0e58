"""`bouncekeeper verp encode -` (recipients on stdin) against the Python API in-process, in the same run.

Writes a key and a config to a temp dir, makes N recipients, then times (median of --rounds):
- `cli`: the command as an application would run it, one process, N lines in, N JSON lines out;
- `api`: `verpkeys.Signer.address_for` on the same recipients in this process (the floor: HMAC-SHA1 and
  the checks, no process start, no JSON).
Prints recipients per second (wall) and the ratio cli/api.

    .venv/bin/python benchmarks/verp_encode.py [--recipients 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "milter"))

from bouncekeeper.verpkeys import Signer  # noqa: E402 -- after the source root is on the path

BIN = pathlib.Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bk-bench-") as tmp:
        work = pathlib.Path(tmp)
        (work / "verp.key").write_text("benchmark-key-0123456789abcdef\n")
        conf = work / "bk.toml"
        conf.write_text(f'[verp]\nbounce_domain = "bounce.example.net"\nsecret_files = ["{work}/verp.key"]\n')
        recipients = [f"user{n}.name@example{n % 500}.org" for n in range(args.recipients)]
        data = ("\n".join(recipients) + "\n").encode()
        signer = Signer.from_key_files([str(work / "verp.key")], "bounce.example.net")
        cli_rates, api_rates = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            done = subprocess.run(
                [BIN / "bouncekeeper", "--config", str(conf), "verp", "encode", "-", "--context", "news-42"],
                input=data, capture_output=True, check=True,
            )  # fmt: skip
            cli_rates.append(args.recipients / (time.perf_counter() - start))
            assert done.stdout.count(b"\n") == args.recipients
            start = time.perf_counter()
            for rcpt in recipients:
                signer.address_for(rcpt, "news-42")
            api_rates.append(args.recipients / (time.perf_counter() - start))
    cli, api = statistics.median(cli_rates), statistics.median(api_rates)
    print(f"{args.recipients} recipients, medians of {args.rounds} rounds (wall time)")
    print(f"cli  `bouncekeeper verp encode -`: {cli:9.0f} recipients/s")
    print(f"api  Signer.address_for:          {api:9.0f} recipients/s")
    print(f"ratio cli/api: {cli / api:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
