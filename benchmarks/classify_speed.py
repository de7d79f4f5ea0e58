"""Emails per second: our classifier vs flufl.bounce alone, over the same corpus in the same run.

    python3 benchmarks/classify_speed.py [CORPUS_DIR] [--rounds N]

Both sides start from raw bytes already in memory (no disk I/O timed): flufl.bounce's time includes the
stdlib parse it needs (`email.message_from_bytes` + `all_failures`), ours is `classify(raw)`. Rounds
alternate between the two so that CPU frequency drift hits both alike; the best round of each is kept
(the least disturbed by other processes). Time is this process's CPU time (time.process_time), so that
other load on a shared machine does not count as ours or flufl's. One process, one core.
"""

from __future__ import annotations

import argparse
import email
import logging
import pathlib
import sys
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default=str(DEFAULT_CORPUS), help="folder with emails/**/*.eml")
    parser.add_argument("--rounds", type=int, default=5)
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
    print(f"ratio ours/flufl   : {rate_ours / rate_flufl:8.2f}x  (goal >= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
