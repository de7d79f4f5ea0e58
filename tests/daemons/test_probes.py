"""Probes to disabled addresses, sent over SMTP to an aiosmtpd sink on 127.0.0.1.

The real Service, store and classifier; the bounce of a probe is a DSN made by tests/support/dsn.py and
addressed to the probe's own envelope sender, as the MTA would send it back.
"""

from __future__ import annotations

import email
import email.policy
import pathlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from bouncekeeper import cli, config
from bouncekeeper.core import verp
from bouncekeeper.core.scoring import State
from bouncekeeper.daemons import probes
from bouncekeeper.service.bounces import Arrival, Service, Source
from bouncekeeper.store import Store
from bouncekeeper.store.event import Event, EventKind
from bouncekeeper.store.runlock import Busy, RunLock
from tests.support.dovecot import free_port
from tests.support.dsn import postfix_dsn
from tests.support.redis_server import RedisServer

KEY = b"0123456789abcdef0123456789abcdef"
KEYRING = verp.Keyring.from_secrets([KEY])
DOMAIN = "bounce.example.net"
T0 = 1_763_769_600.0
DAY = 86_400


@dataclass
class Sink:
    """Keeps every envelope it is given."""

    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 OK"


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler = Sink()
    port = free_port()  # aiosmtpd 1.4's Controller checks readiness on the port it was given: not 0
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def make_settings(redis_url: str, port: int, tmp: pathlib.Path) -> config.Settings:
    (tmp / "verp.key").write_bytes(KEY)
    return config.loads(
        f'[verp]\nbounce_domain = "{DOMAIN}"\nsecret_files = ["{tmp / "verp.key"}"]\n'
        f'[redis]\nurl = "{redis_url}"\n'
        '[policy]\nmode = "enforce"\nhard_threshold = 1\nbreaker_addresses = 0\n'
        f"[probes]\nenabled = true\ncount = 3\ninterval_days = 7\nsmtp_port = {port}\n"
        'sender = "Example App <no-reply@app.example.org>"\n'
        'reenable_url = "https://app.example.org/emails/{address}/enable"\n'
    )


@pytest.fixture
def service(redis_db: RedisServer, sink: tuple[Sink, int], tmp_path: pathlib.Path) -> Iterator[Service]:
    settings = make_settings(redis_db.url, sink[1], tmp_path)
    s = Service(settings, Store.from_settings(settings.redis), keyring=KEYRING)
    yield s
    s.close()


def disable(service: Service, address: str, *, now: float = T0) -> None:
    """Disabled by a (real, classified) bounce."""
    rcpt = verp.encode(address, keyring=KEYRING, bounce_domain=DOMAIN, day=int(now // DAY))
    service.clock = lambda: now
    outcome = service.process_bounce(
        Arrival(
            postfix_dsn(address, to=rcpt, n=int(now)),
            envelope_rcpt=rcpt,
            envelope_sender="",
            source=Source.LMTP,
        )
    )
    assert outcome.recorded[0].state is State.DISABLED_BOUNCES


def send_with(sink: tuple[Sink, int]) -> probes.Send:
    return probes.smtp_sender("127.0.0.1", sink[1])


def test_a_disabled_address_gets_a_signed_probe(service: Service, sink: tuple[Sink, int]) -> None:
    disable(service, "zoe@example.org")
    service.store.admin(
        "yan@example.org",
        "disable",
        Event(at=T0, kind=EventKind.DISABLED, source=Source.CLI),
        state=State.DISABLED_ADMIN,
    )
    report = probes.run(service, send_with(sink), now=T0 + 60)
    assert report.sent == ["zoe@example.org"]
    assert report.skipped == {"yan@example.org": "not disabled by bounces"}
    ((mail_from, rcpts, raw),) = sink[0].received
    assert rcpts == ["zoe@example.org"]
    # The envelope sender is a valid VERP token address whose token names the address, context "probe".
    service.clock = lambda: T0 + 60
    checked = service.check_rcpt(mail_from)
    assert checked.status is verp.VerpStatus.VALID
    assert checked.token is not None
    token = service.store.get_token(checked.token)
    assert token is not None
    assert (token["recipients"], token["context"]) == ("zoe@example.org", "probe")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["To"] == "zoe@example.org"
    assert "https://app.example.org/emails/zoe@example.org/enable" in msg.get_content()
    assert "zoe@example.org is disabled" in msg["Subject"]


def test_probes_are_weekly_and_at_most_count(service: Service, sink: tuple[Sink, int]) -> None:
    disable(service, "abe@example.org")
    sent_at = []
    for day in range(0, 40):
        if probes.run(service, send_with(sink), now=T0 + day * DAY + 60).sent:
            sent_at.append(day)
    assert sent_at == [0, 7, 14]  # count = 3, interval_days = 7
    statuses = probes.history(service, "abe@example.org")
    assert [s.probe.result for s in statuses] == ["sent"] * 3
    assert not any(s.bounced for s in statuses)


def test_a_probe_that_bounces_confirms_the_disable(service: Service, sink: tuple[Sink, int]) -> None:
    disable(service, "bea@example.org")
    probes.run(service, send_with(sink), now=T0 + 60)
    ((mail_from, _rcpts, _raw),) = sink[0].received
    # The probe bounces: the MTA returns a DSN to the probe's envelope sender.
    service.clock = lambda: T0 + 120
    outcome = service.process_bounce(
        Arrival(
            postfix_dsn("bea@example.org", to=mail_from, n=99),
            envelope_rcpt=mail_from,
            envelope_sender="",
            source=Source.LMTP,
        )
    )
    assert outcome.recorded[0].address == "bea@example.org"
    (status,) = probes.history(service, "bea@example.org")
    assert status.bounced
    report = probes.run(service, send_with(sink), now=T0 + 8 * DAY)
    assert report.skipped["bea@example.org"] == "a probe bounced: disable confirmed"
    assert len(sink[0].received) == 1


def test_a_new_disable_starts_a_new_probe_series(service: Service, sink: tuple[Sink, int]) -> None:
    disable(service, "cy@example.org")
    for day in (0, 7, 14):
        probes.run(service, send_with(sink), now=T0 + day * DAY + 60)
    service.store.admin(
        "cy@example.org", "enable", Event(at=T0 + 20 * DAY, kind=EventKind.ENABLED, source=Source.CLI)
    )
    disable(service, "cy@example.org", now=T0 + 30 * DAY)
    assert probes.run(service, send_with(sink), now=T0 + 30 * DAY + 60).sent == ["cy@example.org"]
    assert len(sink[0].received) == 4


def test_overlapping_runs_are_refused(service: Service, sink: tuple[Sink, int]) -> None:
    disable(service, "dee@example.org")
    with RunLock(service.store, "bk:probes:lock", 60), pytest.raises(Busy):
        probes.run(service, send_with(sink), now=T0)
    assert sink[0].received == []


def test_probes_cli_run_and_history(
    redis_db: RedisServer, sink: tuple[Sink, int], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(redis_db.url, sink[1], tmp_path)
    service = Service(settings, Store.from_settings(settings.redis), keyring=KEYRING)
    try:
        disable(service, "eve@example.org", now=time.time())
    finally:
        service.close()
    conf = tmp_path / "bk.toml"
    conf.write_text(
        f'[verp]\nbounce_domain = "{DOMAIN}"\nsecret_files = ["{tmp_path / "verp.key"}"]\n'
        f'[redis]\nurl = "{redis_db.url}"\n'
        f'[probes]\nenabled = true\nsmtp_port = {sink[1]}\nsender = "no-reply@app.example.org"\n'
    )
    assert cli.main(["--config", str(conf), "probes", "run", "--dry-run"]) == 0
    assert "would probe 1 address(es)" in capsys.readouterr().out
    assert sink[0].received == []
    assert cli.main(["--config", str(conf), "probes", "run"]) == 0
    assert "probed 1 address(es)" in capsys.readouterr().out
    assert cli.main(["--config", str(conf), "probes", "run"]) == 0  # cron again: nothing due
    assert "probed 0 address(es)" in capsys.readouterr().out
    assert len(sink[0].received) == 1
    assert cli.main(["--config", str(conf), "probes", "history", "eve@example.org"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"GMT  sent  no bounce  <[0-9.]+\.probe@bounce\.example\.net>", out)
