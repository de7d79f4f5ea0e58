"""A store populated for `bouncekeeper report` and the admin page's charts (tests/service/test_report.py,
tests/service/test_charts.py): through the real commands and store methods."""

from __future__ import annotations

import pathlib
import time

import pytest

from bouncekeeper import cli, config
from bouncekeeper.service.bounces import Service
from bouncekeeper.store.event import Event, EventKind, Source


def make_conf(tmp_path: pathlib.Path, url: str, mode: str) -> str:
    path = tmp_path / f"bk-{mode}.toml"
    policy = f'mode = "{mode}"\nrule = "count"\ncount_threshold = 2\nsoft_threshold = 3\n'
    path.write_text(f'[redis]\nurl = "{url}"\n[policy]\n{policy}')
    return str(path)


def run(conf: str, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["--config", conf, *argv])
    return code, capsys.readouterr().out


def populate(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Failures of every kind from two domains, a threshold crossing, a forged and a loop event, an
    operator's disabling and a dead letter: what `report` and the admin page's charts both read."""
    failures = [
        ("gone@a.example", "550", "5.1.1", "no such user", "m1"),
        ("gone@a.example", "550", "5.1.1", "no such user", "m2"),  # the second hard event: threshold
        ("full@a.example", "452", "4.2.2", "mailbox full", "m3"),
        ("full@a.example", "452", "4.2.2", "mailbox full", "m4"),  # soft 2 of 3: near the threshold
        ("x@b.example", "550", "5.1.1", "unknown user", "m5"),  # hard 1 of 2: near
        ("y@b.example", "554", "5.7.1", "rejected as spam", "m6"),
    ]
    for address, code, status, text, mid in failures:
        out = run(
            conf,
            capsys,
            "record",
            address,
            "--code",
            code,
            "--status",
            status,
            "--text",
            text,
            "--message-id",
            mid,
        )
        assert out[0] == 0, out
    assert run(conf, capsys, "disable", "ops@b.example")[0] == 0
    service = Service.open(config.load(conf))
    try:
        now = time.time()
        service.store.log_event(
            Event(at=now, kind=EventKind.FORGED, source=Source.LMTP, address="z@b.example")
        )
        service.store.log_event(Event(at=now, kind=EventKind.LOOP, source=Source.MILTER))
        service.store._client.xadd("bk:{outbox}:dead", {"type": "disabled", "address": "ops@b.example"})
    finally:
        service.close()
