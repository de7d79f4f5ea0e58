"""Hostile messages against the classifier: the worst CPU time per message, and a fuzz run.

    python3 benchmarks/adversarial.py [--sizes 184000,1000000,10000000] [--only NAME] [--limit SECONDS]
    python3 benchmarks/adversarial.py --fuzz 20000 [--seed 13]

The first form builds every message of tests/support/hostile_mail.py at each size (long lines, deep MIME
nesting, header floods, 20,000-recipient DSNs, encoded-word soup, 10 MB attachments, one 184 KB line of
45,900 addresses ...), classifies each once in this process and prints its CPU time (time.process_time:
other load on a shared machine does not count), what the result says was cut (Classification.limits), and
the worst time with the message that took it. Goal: no message up to 10 MB over 1 s. The
baseline in the same run: the time to parse the same bytes with the stdlib's email parser, a cost no one
calls hostile. A message still running after --limit seconds is stopped and reported as such.

The second form classifies N seeded mutations of the corpus's messages and counts those that raised, that
returned a malformed result, or whose result records an error of our own stages (flufl.bounce's own
exceptions are contained and expected). It prints the slowest mutant too. Exit status 1 when any failed.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import logging
import pathlib
import signal
import sys
import time
from types import FrameType

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "milter"))
sys.path.insert(0, str(ROOT))

from tests.support import hostile_mail  # noqa: E402
from tests.support.hostile_mail import problems  # noqa: E402

from bouncekeeper.core.classify import classify  # noqa: E402 - after the path set-up above
from bouncekeeper.core.model import Classification  # noqa: E402

DEFAULT_SIZES = (184_000, 1_000_000, 10_000_000)


class _Stopped(BaseException):
    """Raised by the alarm: a BaseException, so that the classifier's own `except Exception` lets it by."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def timed(raw: bytes, limit: float) -> tuple[float, Classification | None]:
    """CPU seconds to classify `raw` (None as the result when stopped after `limit` wall seconds)."""
    signal.signal(signal.SIGALRM, _stop)
    signal.setitimer(signal.ITIMER_REAL, limit)
    start = time.process_time()
    try:
        result: Classification | None = classify(raw)
    except _Stopped:
        result = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return time.process_time() - start, result


def stdlib_parse(raw: bytes) -> float:
    start = time.process_time()
    try:
        email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    except RecursionError:
        return float("nan")  # deep nesting: the stdlib's parser recurses once per level
    return time.process_time() - start


def hostile(sizes: list[int], only: str | None, limit: float) -> int:
    worst = (0.0, "")
    print(f"{'message':<30} {'size':>10} {'cpu s':>8} {'stdlib s':>9}  type / limits")
    for name, build in hostile_mail.BUILDERS.items():
        if only and name != only:
            continue
        for size in sizes:
            raw = build(size)
            seconds, result = timed(raw, limit)
            baseline = stdlib_parse(raw)
            if result is None:
                verdict = f"STOPPED after {limit:.0f} s"
            else:
                limits = ",".join(result.limits) or "-"
                verdict = f"{result.message_type.value} failures={len(result.failures)} limits={limits}"
                bad = problems(result)
                if bad:
                    verdict += f" PROBLEMS: {bad}"
            print(f"{name:<30} {len(raw):>10} {seconds:>8.3f} {baseline:>9.3f}  {verdict}", flush=True)
            if seconds > worst[0]:
                worst = (seconds, f"{name} at {len(raw)} bytes")
    print(f"worst: {worst[0]:.3f} s CPU ({worst[1]})  (goal <= 1 s up to 10 MB)")
    return 0


def fuzz(count: int, seed: int, limit: float) -> int:
    messages = hostile_mail.corpus()
    if not messages:
        print(f"no corpus under {hostile_mail.CORPUS}", file=sys.stderr)
        return 1
    failed = 0
    slowest = (0.0, -1)
    start = time.process_time()
    for number, (index, raw) in enumerate(hostile_mail.mutants(messages, count, seed)):
        try:
            seconds, result = timed(raw, limit)
        except Exception as exc:  # noqa: BLE001 - counting what the contract says never happens
            print(f"mutant {number} (corpus #{index}): raised {type(exc).__name__}: {exc}")
            failed += 1
            continue
        bad = ["stopped"] if result is None else problems(result)
        if bad:
            print(f"mutant {number} (corpus #{index}): {bad}")
            failed += 1
        if seconds > slowest[0]:
            slowest = (seconds, number)
    total = time.process_time() - start
    print(
        f"fuzz: {count} mutants of {len(messages)} corpus messages, seed {seed}: {failed} failed; "
        f"{total:.1f} s CPU, slowest mutant #{slowest[1]} {slowest[0]:.3f} s"
    )
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="bytes, comma-separated")
    parser.add_argument("--only", metavar="NAME", choices=sorted(hostile_mail.BUILDERS), help="one message")
    parser.add_argument("--limit", type=float, default=60.0, help="stop a message after this many seconds")
    parser.add_argument("--fuzz", type=int, metavar="N", help="classify N mutated corpus messages instead")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    logging.getLogger("flufl.bounce").disabled = True
    classify(b"Subject: warm-up\n\nx\n")  # imports and regex caches: a daemon's steady state
    if args.fuzz:
        return fuzz(args.fuzz, args.seed, args.limit)
    return hostile([int(x) for x in args.sizes.split(",")], args.only, args.limit)


if __name__ == "__main__":
    sys.exit(main())
