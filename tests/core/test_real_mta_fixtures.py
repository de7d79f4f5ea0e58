"""The bounces real Postfix, Exim and Sendmail wrote (tests/fixtures/mta/), classified: the fast twin of
tests/mta/test_real_mta_bounces.py, with the same expectations (tests/support/bounce_cases.py)."""

from __future__ import annotations

import pathlib

import pytest

from bouncekeeper.core.classify import classify
from tests.support.bounce_cases import CASES, check_delay, check_failure

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "mta"
BY_NAME = {case.name: case for case in CASES}
FILES = sorted(FIXTURES.glob("*.eml"))


def test_every_case_has_a_bounce_from_each_mta() -> None:
    names = {path.stem for path in FILES}
    for mta in ("postfix", "exim", "sendmail"):
        for case in CASES:
            assert f"{mta}-{case.name}" in names
            if case.expires:
                assert f"{mta}-{case.name}-delay" in names


@pytest.mark.parametrize("path", [p for p in FILES if not p.stem.endswith("-delay")], ids=lambda p: p.stem)
def test_a_real_mta_bounce_is_read_right(path: pathlib.Path) -> None:
    case = BY_NAME[path.stem.split("-", 1)[1]]
    result = classify(path.read_bytes())
    (failure,) = [f for f in result.failures if f.recipient == case.recipient]
    check_failure(result, failure, case)


@pytest.mark.parametrize("path", [p for p in FILES if p.stem.endswith("-delay")], ids=lambda p: p.stem)
def test_a_real_mta_delay_warning_is_a_delay(path: pathlib.Path) -> None:
    case = BY_NAME[path.stem.split("-", 2)[1]]
    result = classify(path.read_bytes())
    (failure,) = [f for f in result.delays if f.recipient == case.recipient]
    check_delay(result, failure, case)
