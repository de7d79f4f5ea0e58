"""Emails per second: our classifier vs flufl.bounce alone, over the same corpus in the same run.

    python3 benchmarks/classify_speed.py [CORPUS_DIR] [--rounds N] [--passes P]

Both sides start from raw bytes already in memory (no disk I/O timed): flufl.bounce's time includes the
stdlib parse it needs (`email.message_from_bytes` + `all_failures`), ours is `classify(raw)`. Rounds
alternate between the two so that CPU frequency drift hits both alike; the best round of each is kept
(the least disturbed by other processes). Time is this process's CPU time (time.process_time), so that
other load on a shared machine does not count as ours or flufl's. One process, one core.

Then whole processes, start-up included (docs/classify-cost.md): `bouncekeeper classify --jsonl` given
every corpus file P times (4 by default) against a Python script that does what a user of flufl.bounce
would (import it, and for each file read it, parse it, run `all_failures`, print one JSON line). Each side
runs --rounds times, alternating, and its best is kept; time is the child's CPU time (user + system, from
getrusage), so that other processes' load does not count either. Both sides read their modules'
bytecode from one cache (PYTHONPYCACHEPREFIX, a temporary folder filled by an untimed run of each), as
an installed package does (pip and dpkg compile it at install): flufl.bounce's site-packages come
compiled, and a source checkout run under PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module
of ours at each start (~17 ms of a ~97 ms start-up), timing the compiler instead of the start-up.
"""

from __future__ import annotations

import argparse
import email
import logging
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

from flufl.bounce import all_failures

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "milter"))

from bouncekeeper.core.classify import classify  # noqa: E402 - after the path set-up above

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"  # ../shared beside the checkout


def flufl_alone(raw: bytes) -> object:
    try:
        return all_failures(email.message_from_bytes(raw))
    except Exception:  # noqa: BLE001 - flufl.bounce raises on some real messages; count them as done
        return None


def ours(raw: bytes) -> object:
    return classify(raw)


def timed(func: object, messages: list[bytes]) -> float:
    assert callable(func)
    start = time.process_time()
    for raw in messages:
        func(raw)
    return time.process_time() - start


# What a user of flufl.bounce runs over files: its start-up counts, as ours does.
FLUFL_SCRIPT = """
import email, json, sys
from flufl.bounce import all_failures
for name in sys.argv[1:]:
    with open(name, "rb") as handle:
        raw = handle.read()
    try:
        temporary, permanent = all_failures(email.message_from_bytes(raw))
    except Exception:
        temporary = permanent = set()
    out = {"file": name, "temporary": sorted(a.decode("latin-1") for a in temporary),
           "permanent": sorted(a.decode("latin-1") for a in permanent)}
    print(json.dumps(out))
"""


def child_cpu(argv: list[str], env: dict[str, str]) -> float:
    """The CPU time (user + system) of one child process running `argv`, its output discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def whole_process(paths: list[pathlib.Path], passes: int, rounds: int) -> None:
    files = [str(p) for p in paths] * passes
    bouncekeeper = str(pathlib.Path(sys.executable).parent / "bouncekeeper")
    ours_argv = [bouncekeeper, "--config", os.devnull, "classify", "--jsonl", *files]
    flufl_argv = [sys.executable, "-c", FLUFL_SCRIPT, *files]
    start_argv = [bouncekeeper, "--config", os.devnull, "classify", "--jsonl", os.devnull]
    best = {"ours": float("inf"), "flufl": float("inf"), "start": float("inf")}
    with tempfile.TemporaryDirectory(prefix="classify-speed-pyc-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"PYTHONWARNINGS": "ignore", "PYTHONPYCACHEPREFIX": cache}
        for argv in (flufl_argv[:4], ours_argv[:6]):  # untimed: compiles each side's modules once
            child_cpu(argv, env)
        for _ in range(rounds):
            best["flufl"] = min(best["flufl"], child_cpu(flufl_argv, env))
            best["ours"] = min(best["ours"], child_cpu(ours_argv, env))
            best["start"] = min(best["start"], child_cpu(start_argv, env))
    print(f"whole process: {len(files)} files ({len(paths)} x {passes}), best of {rounds} rounds, child CPU")
    print("(both sides' bytecode compiled once before timing, as an installed package has it)")
    print(f"flufl.bounce script              : {best['flufl']:6.3f} s")
    print(
        f"bouncekeeper classify --jsonl    : {best['ours']:6.3f} s  (start-up alone: {best['start']:.3f} s)"
    )
    print(f"ratio flufl/ours                 : {best['flufl'] / best['ours']:6.2f}x  (goal >= 1.5x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default=str(DEFAULT_CORPUS), help="folder with emails/**/*.eml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=4, help="times each file is given to one process")
    args = parser.parse_args()
    logging.getLogger("flufl.bounce").disabled = True  # its tracebacks would be timed as output
    paths = sorted(pathlib.Path(args.corpus).glob("emails/**/*.eml"))
    if not paths:
        print(f"no emails under {args.corpus}/emails", file=sys.stderr)
        return 1
    messages = [p.read_bytes() for p in paths]
    ours(messages[0])  # warm the regex caches and imports: steady state is what a daemon sees
    flufl_alone(messages[0])
    best = {"ours": float("inf"), "flufl": float("inf")}
    for _ in range(args.rounds):
        best["flufl"] = min(best["flufl"], timed(flufl_alone, messages))
        best["ours"] = min(best["ours"], timed(ours, messages))
    n = len(messages)
    rate_ours = n / best["ours"]
    rate_flufl = n / best["flufl"]
    print(f"corpus: {n} emails, {sum(map(len, messages)) / 1e6:.1f} MB, best of {args.rounds} rounds")
    print(f"flufl.bounce alone : {rate_flufl:8.0f} emails/s")
    print(f"bouncekeeper       : {rate_ours:8.0f} emails/s")
    print(f"ratio ours/flufl   : {rate_ours / rate_flufl:8.2f}x  (goal >= 2.0x)")
    whole_process(paths, args.passes, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
