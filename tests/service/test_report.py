"""`bouncekeeper report`: a store populated through the real commands and store methods, read back as
text and JSON; what enforce would do (observe mode) and did (enforce mode)."""

from __future__ import annotations

import datetime
import json
import pathlib
import time

import pytest

from bouncekeeper import config
from bouncekeeper.service import report
from bouncekeeper.service.bounces import Service
from tests.support.redis_server import RedisServer
from tests.support.report_store import make_conf, populate, run


def test_report_observe_mode(
    redis_db: RedisServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = make_conf(tmp_path, redis_db.url, "observe")
    populate(conf, capsys)
    code, out = run(conf, capsys, "report", "--json")
    assert code == 0
    data = json.loads(out)
    b = data["bounces"]
    assert b["total"] == 6
    assert b["by_kind"] == {"permanent": 3, "temporary": 3, "unknown": 0}
    assert b["by_domain"] == {"a.example": 4, "b.example": 2}
    assert b["by_reason"] == {"userunknown": 3, "mailboxfull": 2, "spamdetected": 1}
    assert b["by_source"] == {"smtp-time": 6}
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert b["per_day"][-1] == {"day": today, "permanent": 3, "temporary": 3, "unknown": 0}
    assert len(b["per_day"]) in (8, 9)  # seven days back, both ends included
    assert (data["forged"], data["loops"]) == (1, 1)
    assert data["crossed"]["threshold"] == ["gone@a.example"]
    assert data["crossed"]["disabled_other"] == ["ops@b.example"]
    standing = data["addresses"]
    assert [r["address"] for r in standing["at_threshold_active"]] == ["gone@a.example"]
    assert [r["address"] for r in standing["near_threshold"]] == ["full@a.example", "x@b.example"]
    assert standing["states"]["disabled-admin"] == 1
    # The operator's disabling waits in the outbox (no notifier runs here).
    assert data["notifier"] == {"backlog": 1, "dead_letters": 1}
    assert data["enforce"]["mode"] == "observe"
    assert data["enforce"]["would_disable"] == 1
    code, text = run(conf, capsys, "report", "--since", "1h")
    assert code == 0
    assert "observe mode: 1 active addresses are at the threshold now; enforce would disable them" in text
    assert "gone@a.example hard=2" in text
    assert "notifier: backlog 1, dead letters 1" in text


def test_report_enforce_mode_and_window(
    redis_db: RedisServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = make_conf(tmp_path, redis_db.url, "enforce")
    populate(conf, capsys)
    data = json.loads(run(conf, capsys, "report", "--json")[1])
    assert data["enforce"]["mode"] == "enforce"
    assert data["crossed"]["disabled_by_bounces"] == ["gone@a.example"]
    assert data["enforce"]["disabled_by_bounces"] == 1
    assert data["addresses"]["at_threshold_active_count"] == 0
    # A window that ends before the events: none counted.
    service = Service.open(config.load(conf))
    try:
        empty = report.build(service, since=60, now=time.time() - 3600)
    finally:
        service.close()
    assert empty["bounces"]["total"] == 0
    assert run(conf, capsys, "report", "--since", "soon")[0] == 2


def test_parse_since() -> None:
    assert report.parse_since("7d") == 7 * 86_400
    assert report.parse_since("12h") == 12 * 3600
    assert report.parse_since("2w") == 14 * 86_400
    for bad in ("", "0d", "7", "d", "1y"):
        with pytest.raises(ValueError, match="not a duration"):
            report.parse_since(bad)
