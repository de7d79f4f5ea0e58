"""What a stranger's bounce costs Redis (docs/security.md): used_memory growth and keys added per hostile DSN,
through the Service and the real classifier, into a redis-server this script starts.

Cases (tests/support/dsn.py hostile_dsn, all to the plain bounce address, no VERP):
- the issue's: 200 recipients, each with its Remote-MTA and diagnostic, and a 64 KB Message-ID;
- terse: 100 recipients with the fewest octets each (the most recipients per octet of message);
- 20,000 invented addresses of one provider.
Each with `[policy] require_verp` at its default (true) and opted out (false). Prints the message size,
the growth of used_memory (less the clients' buffers) per message, its ratio to the message size, the
keys added per message and whether a circuit breaker opened.

With `--baseline DIR` (another checkout's root, e.g. `git archive 5da14eb milter | tar -x -C DIR`), the
same cases run on that code first, in its own process and Redis, and the ratios after/before are printed.
Usage: python benchmarks/hostile_store.py [--messages 20] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent

CASES = (
    ("issue: 200 rcpts, 64 KB Message-ID", 200, 65_536, False),
    ("terse: 100 rcpts", 100, 0, True),
    ("20,000 invented rcpts", 20_000, 0, True),
)
PLAIN = "bounces@example.net"


def measure(code: pathlib.Path, messages: int) -> list[dict[str, Any]]:
    """The cases on the bouncekeeper package under `code`/milter (run in a fresh process by main)."""
    sys.path[:0] = [str(code / "milter"), str(ROOT)]
    from tests.support.dsn import hostile_dsn, postfix_dsn  # noqa: PLC0415
    from tests.support.redis_server import RedisServer  # noqa: PLC0415

    from bouncekeeper import config  # noqa: PLC0415 -- the code to measure is chosen at run time
    from bouncekeeper.core import verp  # noqa: PLC0415
    from bouncekeeper.service.bounces import Arrival, Service, Source  # noqa: PLC0415
    from bouncekeeper.store import Store  # noqa: PLC0415

    keyring = verp.Keyring.from_secrets([b"0123456789abcdef0123456789abcdef"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bk-hostile-store-") as directory:
        server = RedisServer(pathlib.Path(directory))
        server.start()
        client = server.client()
        try:
            for require in (True, False):
                settings = config.Settings(
                    verp=config.VerpSettings(bounce_domain="bounce.example.net"),
                    redis=config.RedisSettings(url=server.url),
                    policy=config.ScoringSettings(mode="enforce", require_verp=require),
                )
                service = Service(settings, Store.from_settings(settings.redis), keyring=keyring)
                for name, rcpts, message_id, terse in CASES:
                    client.execute_command("FLUSHALL", "SYNC")
                    warm = postfix_dsn("warm@example.org", to=PLAIN, n=0)
                    service.process_bounce(
                        Arrival(warm, envelope_rcpt=PLAIN, envelope_sender="", source=Source.LMTP)
                    )
                    before, keys = _data(client), client.dbsize()
                    count = 5 if rcpts > 1_000 else messages
                    size = 0
                    for n in range(1, count + 1):
                        raw = hostile_dsn([f"u{n}x{i}@provider.example" for i in range(rcpts)], to=PLAIN,
                                          message_id_octets=message_id, n=n, terse=terse)  # fmt: skip
                        size += len(raw)
                        service.process_bounce(
                            Arrival(raw, envelope_rcpt=PLAIN, envelope_sender="", source=Source.LMTP)
                        )
                    growth = _data(client) - before
                    rows.append({
                        "case": name, "require_verp": require, "message": size // count,
                        "growth": growth // count, "ratio": growth / size,
                        "keys": (client.dbsize() - keys) / count, "breaker": bool(client.keys("*:frozen")),
                    })  # fmt: skip
                service.close()
        finally:
            client.close()
            server.stop()
    return rows


def _data(client: Any) -> int:
    """used_memory without what the clients' buffers hold at the moment (mem_clients_normal): those
    come and go with the last reply, and are no part of what the bounces left in Redis."""
    info = client.info("memory")
    return int(info["used_memory"]) - int(info["mem_clients_normal"])


def run(code: pathlib.Path, messages: int) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(code), "--messages", str(messages)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    rows: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--baseline", type=pathlib.Path, help="another checkout's root, measured first")
    parser.add_argument("--measure", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.messages)))
        return
    baseline = run(args.baseline, args.messages) if args.baseline else None
    rows = run(ROOT, args.messages)
    for n, row in enumerate(rows):
        line = (
            f"require_verp={row['require_verp']!s:5} {row['case']:36} message {row['message']:>8} B  "
            f"Redis +{row['growth']:>9} B/message (x{row['ratio']:.2f})  keys +{row['keys']:.0f}/message  "
            f"breaker {'open' if row['breaker'] else 'closed'}"
        )
        if baseline is not None:
            base = baseline[n]
            line += (
                f"  | baseline +{base['growth']:>9} B/message (x{base['ratio']:.2f}), "
                f"keys +{base['keys']:.0f}, breaker {'open' if base['breaker'] else 'closed'}"
            )
        print(line)


if __name__ == "__main__":
    main()
