"""Bounces through real Exim 4.96 into `bouncekeeper lmtp` and Redis, with exim/exim4.conf.example.

Exim delivers the bounce domain to the listener over LMTP (the lmtp transport on a unix socket, and the
smtp transport with protocol = lmtp over TCP); smtp-sink plays the remote MX, refusing dead.test's
recipients with 550 5.1.1 so that Exim writes its own bounce.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from bouncekeeper import config, verpkeys
from bouncekeeper.core import verp
from bouncekeeper.store import Store, connect
from tests.support.exim import EXIM_USER, ROOT, Exim, SmtpSink, free_port, scratch_dir
from tests.support.lifecycle import running
from tests.support.lmtp import ListenerProcess
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.mta

SECRET = "5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"
BOUNCE_DOMAIN = "bounce.example.net"
APP = "app@example.org"
FIXTURES = ROOT / "tests" / "fixtures" / "lmtp"


class Listener(ListenerProcess):
    """`bouncekeeper lmtp` on its own config file for one Exim instance."""

    def __init__(self, directory: pathlib.Path, key: pathlib.Path, redis_url: str, listen: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "bk.toml"
        conf.write_text(
            f'state_dir = "{directory}"\n'
            f'[verp]\nbounce_domain = "{BOUNCE_DOMAIN}"\nsecret_files = ["{key}"]\n'
            f'[redis]\nurl = "{redis_url}"\n'
            f'[lmtp]\nlisten = "{listen}"\nsocket_mode = 0o666\n'
        )
        super().__init__(conf, listen, directory / "listener.log")


class Setup:
    def __init__(self, directory: pathlib.Path, redis: RedisServer) -> None:
        self.dir = directory
        self.redis = redis
        self.key = directory / "verp.key"
        self.key.write_text(SECRET + "\n")
        self.key.chmod(0o644)
        self.sink = SmtpSink(directory / "sink")
        self.dead = SmtpSink(
            directory / "dead",
            reject_rcpt="550 5.1.1 <gone@dead.test>: Recipient address rejected: User unknown",
        )
        socket_path = directory / "lmtp.sock"
        self.listener = Listener(directory / "bk", self.key, redis.url, f"unix:{socket_path}")
        tcp_port = free_port()
        self.tcp_listener = Listener(directory / "bk-tcp", self.key, redis.url, f"127.0.0.1:{tcp_port}")
        routes = f"<; dead.test 127.0.0.1::{self.dead.port} byname ; * 127.0.0.1::{self.sink.port} byname"
        # The example's own local domains (this host) and its postmaster's mailbox, written by Exim's user.
        self.mail = directory / "mail"
        self.mail.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.mail, EXIM_USER)
        common = {
            "BK_KEYFILE": str(self.key),
            "BK_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
            "BK_SENDERS": APP,
            "BK_RELAY_ROUTES": routes,
            "BK_POSTMASTER_MAILBOX": str(self.mail / "postmaster"),
            "BK_MAIL_USER": EXIM_USER,
        }
        (directory / "exim").mkdir()
        (directory / "exim-tcp").mkdir()
        self.exim = Exim(directory / "exim", {**common, "BK_LMTP_SOCKET": str(socket_path)})
        self.exim_tcp = Exim(
            directory / "exim-tcp", {**common, "BK_LMTP_HOST": "127.0.0.1", "BK_LMTP_PORT": str(tcp_port)}
        )
        settings = config.loads(f'[redis]\nurl = "{redis.url}"\n')
        self.store: Store = connect(settings)

    def events(self, address: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not (found := self.store.view(address).events) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


@pytest.fixture(scope="module")
def setup(redis_server: RedisServer) -> Iterator[Setup]:
    if redis_server.proc is None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    client.close()
    s = Setup(scratch_dir("bk-eximb-"), redis_server)
    with running(s.sink, s.dead, s.listener, s.tcp_listener, s.exim, s.exim_tcp):
        yield s
    s.store.close()
    shutil.rmtree(s.dir, ignore_errors=True)


def _vaddr(rcpt: str) -> str:
    ring = verp.Keyring.from_secrets([SECRET.encode()])
    return verp.encode(rcpt, keyring=ring, bounce_domain=BOUNCE_DOMAIN, day=verpkeys.today())


def _inject(exim: Exim, rcpt: str, raw: bytes) -> None:
    """A remote MTA delivering a bounce (null sender) to Exim by SMTP."""
    with smtplib.SMTP("127.0.0.1", exim.port, timeout=10) as smtp:
        smtp.sendmail("<>", [rcpt], re.sub(rb"\r?\n", b"\r\n", raw))


def test_remote_refusal_becomes_exims_bounce_and_a_permanent_record_for_the_original_recipient(
    setup: Setup,
) -> None:
    msg = EmailMessage()
    msg["From"] = APP
    msg["To"] = "gone@dead.test"
    msg["Subject"] = "newsletter"
    msg.set_content("hello\n")
    with smtplib.SMTP("127.0.0.1", setup.exim.port, timeout=10) as smtp:
        smtp.send_message(msg, from_addr=APP, to_addrs=["gone@dead.test"])
    events = setup.events("gone@dead.test")
    assert events, setup.exim.mainlog()
    assert (events[0]["kind"], events[0]["status"]) == ("permanent", "5.1.1")
    assert events[0]["source"] == "lmtp"
    # Exim's own bounce went to the VERP address (errors_to), not to the application's address.
    # (Exim logs the delivery after the listener's reply, so the record can come first: wait for it.)
    setup.exim.wait_for_log(r"=> bounces\+gone=dead\.test\+\d+[0-9a-f]{12} .*R=bouncekeeper_bounces")
    log = setup.exim.mainlog()
    assert re.search(r"<= <> R=\S+ U=\S+ P=local", log)
    assert "=> app@example.org" not in log


@pytest.mark.parametrize(
    ("fixture", "rcpt", "kind", "reason"),
    [
        ("lhost-postfix-30.eml", "kijitora@example.br", "permanent", "userunknown"),
        ("lhost-postfix-45.eml", "kijitora@example.net", "temporary", "mailboxfull"),
    ],
)
def test_a_corpus_bounce_injected_into_exim_is_recorded_with_its_kind(
    setup: Setup, fixture: str, rcpt: str, kind: str, reason: str
) -> None:
    _inject(setup.exim, _vaddr(rcpt), (FIXTURES / fixture).read_bytes())
    events = setup.events(rcpt)
    assert events, setup.exim.mainlog()
    assert (events[0]["kind"], events[0]["reason"]) == (kind, reason)


def test_lmtp_over_tcp_with_the_smtp_transport_works_too(setup: Setup) -> None:
    rcpt = "tcp-user@example.org"
    _inject(setup.exim_tcp, _vaddr(rcpt), (FIXTURES / "lhost-postfix-30.eml").read_bytes())
    events = setup.events(rcpt)
    assert events, setup.exim_tcp.mainlog()
    assert events[0]["kind"] == "permanent"
    setup.exim_tcp.wait_for_log(r"R=bouncekeeper_bounces T=bouncekeeper_lmtp_tcp")


def test_redis_down_makes_exim_keep_the_bounce_and_deliver_it_later(setup: Setup) -> None:
    rcpt = "later@example.org"
    address = _vaddr(rcpt)
    setup.redis.stop()
    try:
        _inject(setup.exim, address, (FIXTURES / "lhost-postfix-30.eml").read_bytes())
        setup.exim.wait_for_log(rf"== {re.escape(address)} .*451 4\.3\.0")
    finally:
        setup.redis.start()
    assert not setup.store.view(rcpt).events
    # Exim retries at its retry time; -qff forces the retry now. Under load the listener's first
    # connection after the restart may still fail (another 451, the bounce stays queued): force again.
    deadline = time.monotonic() + 60
    events: list[dict[str, Any]] = []
    while not events and time.monotonic() < deadline:
        result = setup.exim.run("-qff")
        assert result.returncode == 0, result.stderr
        events = setup.events(rcpt, timeout=5.0)
    assert events, setup.exim.mainlog()
    assert events[0]["kind"] == "permanent"


def test_postmaster_and_abuse_of_the_bounce_domain_reach_the_postmasters_mailbox_not_the_listener(
    setup: Setup,
) -> None:
    # RFC 5321 section 4.5.1, as `bouncekeeper setup exim` does it: accepted at RCPT from a remote client
    # (-bh: the ACLs, nothing delivered), where any other non-VERP name there is refused.
    for rcpt, reply in (
        (f"postmaster@{BOUNCE_DOMAIN}", "250 Accepted"),
        (f"abuse@{BOUNCE_DOMAIN}", "250 Accepted"),
        (f"nobody@{BOUNCE_DOMAIN}", "550 not a bounce address"),
        (_vaddr("alice@example.com"), "250 Accepted"),
    ):
        session = f"EHLO mx.remote.example\r\nMAIL FROM:<>\r\nRCPT TO:<{rcpt}>\r\nQUIT\r\n"
        out = setup.exim.run("-bh", "192.0.2.1", stdin=session).stdout
        assert re.search(rf"^{reply}$", out, re.MULTILINE), out
    # Delivered: into the postmaster's mailbox at this host, the listener not involved.
    for name in ("postmaster", "abuse"):
        msg = EmailMessage()
        msg["From"] = "someone@remote.example"
        msg["To"] = f"{name}@{BOUNCE_DOMAIN}"
        msg["Subject"] = f"for the {name}"
        msg.set_content("a person should read this\n")
        with smtplib.SMTP("127.0.0.1", setup.exim.port, timeout=10) as smtp:
            smtp.send_message(msg, from_addr="someone@remote.example", to_addrs=[f"{name}@{BOUNCE_DOMAIN}"])
        setup.exim.wait_for_log(
            rf"=> {name} <{name}@{re.escape(BOUNCE_DOMAIN)}> .*R=postmaster T=postmaster_mailbox"
        )
    mailbox = (setup.mail / "postmaster").read_text()
    for name in ("postmaster", "abuse"):
        assert f"Envelope-to: {name}@{BOUNCE_DOMAIN}\n" in mailbox
        assert f"Subject: for the {name}\n" in mailbox
    assert not re.search(r"=> (postmaster|abuse) .*T=bouncekeeper_lmtp", setup.exim.mainlog())
