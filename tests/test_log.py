"""log.QueueIdAdapter.cut: lines about cuts, rate-limited per logger and kind (core/throttle.LineLimit)."""

from __future__ import annotations

import logging

import pytest

from bouncekeeper import log
from tests.support.logs import restore_logging  # noqa: F401 - autouse: log.setup reconfigures logging


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    """The messages of logger `name`, without the queue id in front (an earlier test's may be set)."""
    return [r.getMessage().partition(": ")[2] for r in caplog.records if r.name == name]


def test_the_first_lines_pass_then_one_line_says_how_many_were_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log.cut_lines.configure(burst=3, interval=60, clock=clock)
    logger = log.get_logger("bouncekeeper.test.cuts")
    caplog.set_level(logging.INFO, logger="bouncekeeper.test.cuts")
    for n in range(1000):
        logger.cut("bad-address", "refused rcpt=%r", f"x{n}", level=logging.INFO)
    assert lines(caplog, "bouncekeeper.test.cuts") == [
        "refused rcpt='x0'",
        "refused rcpt='x1'",
        "refused rcpt='x2'",
    ]
    clock.now += 61
    logger.cut("bad-address", "refused rcpt=%r", "late", level=logging.INFO)
    assert lines(caplog, "bouncekeeper.test.cuts")[3:] == [
        "bad-address: 997 similar lines suppressed in the last 61 s",
        "refused rcpt='late'",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_other_kinds_and_ordinary_lines_are_not_held_back(caplog: pytest.LogCaptureFixture) -> None:
    log.cut_lines.configure(burst=1, interval=60, clock=Clock())
    logger = log.get_logger("bouncekeeper.test.cuts")
    caplog.set_level(logging.INFO, logger="bouncekeeper.test.cuts")
    for _ in range(5):
        logger.cut("session", "session closed")
        logger.cut("idle", "idle closed")
        logger.info("one decision")
    got = lines(caplog, "bouncekeeper.test.cuts")
    assert got.count("session closed") == 1
    assert got.count("idle closed") == 1
    assert got.count("one decision") == 5
    assert [r.levelno for r in caplog.records if "closed" in r.getMessage()] == [logging.WARNING] * 2


def test_a_level_that_is_off_spends_nothing_of_the_budget(caplog: pytest.LogCaptureFixture) -> None:
    log.cut_lines.configure(burst=2, interval=60, clock=Clock())
    logger = log.get_logger("bouncekeeper.test.cuts")
    caplog.set_level(logging.WARNING, logger="bouncekeeper.test.cuts")
    for _ in range(10):
        logger.cut("idle", "idle closed", level=logging.DEBUG)
    logger.cut("idle", "idle closed")
    logger.cut("idle", "idle closed")
    assert lines(caplog, "bouncekeeper.test.cuts") == ["idle closed"] * 2


def test_setup_takes_the_configured_budget() -> None:
    log.setup("INFO", burst=7, interval=5.0)
    assert (log.cut_lines.limit.burst, log.cut_lines.limit.interval) == (7, 5.0)


def test_a_librarys_warnings_are_held_back_per_format_and_its_info_lines_kept_for_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log.cut_lines.configure(burst=2, interval=60, clock=clock)
    log.limit_library("bouncekeeper.test.library", debug=False)
    library = logging.getLogger("bouncekeeper.test.library")
    caplog.set_level(logging.DEBUG)
    for n in range(50):
        library.info("%r >> %r", "peer", n)
        library.warning("%r unrecognised: %s", "peer", n)
    clock.now += 60
    library.warning("%r unrecognised: %s", "peer", "late")
    assert [r.getMessage() for r in caplog.records if r.name == library.name] == [
        "'peer' unrecognised: 0",
        "'peer' unrecognised: 1",
        "'peer' unrecognised: late (and 48 similar lines suppressed in the last 60 s)",
    ]
    log.limit_library("bouncekeeper.test.library", debug=True)
    library.info("%r >> %r", "peer", "at debug")
    assert caplog.records[-1].getMessage() == "'peer' >> 'at debug'"
    assert len(library.filters) == 1  # not added twice
