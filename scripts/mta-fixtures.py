#!/usr/bin/env python3
"""Copy the bounces captured by the real-MTA test into tests/fixtures/mta/ under their case names.

    BK_CAPTURE_MTA_BOUNCES=/tmp/cap .venv/bin/python -m pytest tests/mta/test_real_mta_bounces.py
    PYTHONPATH=milter:. .venv/bin/python scripts/mta-fixtures.py /tmp/cap

DIR/MTA/NN.eml holds one MTA's messages in arrival order; each becomes MTA-CASE.eml (or
MTA-CASE-delay.eml) after the case whose recipient it reports a failure (or a delay) of, the first one
for each (Exim repeats its warning at every queue run). The old set is replaced whole, so that the files
come from one run of each MTA (tests/fixtures/mta/PROVENANCE.md).
"""

from __future__ import annotations

import pathlib
import sys

from tests.support.bounce_cases import CASES

from bouncekeeper.core.classify import classify

MTAS = ("postfix", "exim", "sendmail")


def main(capture: pathlib.Path, target: pathlib.Path) -> int:
    by_rcpt = {case.recipient: case.name for case in CASES}
    chosen: dict[str, bytes] = {}
    for mta in MTAS:
        for path in sorted((capture / mta).glob("*.eml")):
            raw = path.read_bytes()
            result = classify(raw)
            for suffix, found in (("", result.failures), ("-delay", result.delays)):
                for failure in found:
                    name = by_rcpt.get(failure.recipient)
                    if name is not None:
                        chosen.setdefault(f"{mta}-{name}{suffix}.eml", raw)
    wanted = {f"{m}-{c.name}.eml" for m in MTAS for c in CASES}
    wanted |= {f"{m}-{c.name}-delay.eml" for m in MTAS for c in CASES if c.expires}
    missing = sorted(wanted - set(chosen))
    if missing:
        print("not captured:", " ".join(missing), file=sys.stderr)
        return 1
    for old in target.glob("*.eml"):
        old.unlink()
    for name in sorted(wanted):
        (target / name).write_bytes(chosen[name])
    print(f"{len(wanted)} files written to {target}")
    return 0


if __name__ == "__main__":
    root = pathlib.Path(__file__).resolve().parent.parent
    sys.exit(main(pathlib.Path(sys.argv[1]), root / "tests" / "fixtures" / "mta"))
