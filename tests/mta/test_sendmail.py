"""The milter through a real Sendmail 8.17 (Debian's binary, unpacked by scripts/fetch-sendmail.sh, never
installed) configured with the shipped sendmail/bouncekeeper.mc: outbound VERP rewrite and bounce
capture."""

from __future__ import annotations

import contextlib
import pathlib
import re
import smtplib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bouncekeeper import config, store, verpkeys
from tests.support.lmtp import ListenerProcess
from tests.support.milter import MilterProcess
from tests.support.mta_config import APP, BOUNCE_DOMAIN, FAST_FAILING, settings_head
from tests.support.postfix import SmtpSink, have_postfix
from tests.support.redis_server import RedisServer
from tests.support.remote_mx import RemoteMx, Reply
from tests.support.sendmail import Sendmail, unpacked

pytestmark = [pytest.mark.mta]

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures" / "milter"


def _send(sendmail: Sendmail, sender: str, rcpts: list[str], raw: bytes) -> None:
    # SMTP lines end in CRLF (RFC 5321 section 2.3.8); Sendmail 8.17 refuses bare LFs.
    crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    with smtplib.SMTP("127.0.0.1", sendmail.port, timeout=30) as smtp:
        smtp.sendmail(sender, rcpts, crlf)


def _events(settings: config.Settings, address: str, timeout: float = 0.0) -> list[dict[str, Any]]:
    """The address's recorded events, read from Redis; waits up to `timeout` for the first one."""
    deadline = time.monotonic() + timeout
    st = store.connect(settings)
    try:
        while True:
            found = list(st.view(address).events)
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)
    finally:
        st.close()


@contextlib.contextmanager
def _running(
    d: pathlib.Path, relay_port: int, milter: MilterProcess, lmtp_socket: pathlib.Path, *others: Any
) -> Iterator[tuple[Sendmail, config.Settings, verpkeys.Signer]]:
    """Start the milter and `others`, then a Sendmail built from the shipped snippet; stop all in reverse."""
    tree = unpacked()
    assert tree is not None
    started: list[Any] = []
    try:
        for thing in (milter, *others):
            thing.start()
            started.append(thing)
        sendmail = Sendmail(
            d / "sendmail",
            tree,
            relay_port=relay_port,
            milter_socket=milter.socket,
            lmtp_socket=str(lmtp_socket),
            bounce_domain=BOUNCE_DOMAIN,
        )
        sendmail.start()
        started.append(sendmail)
        settings = config.load(milter.config)
        signer = verpkeys.load_signer(settings)
        assert signer is not None
        yield sendmail, settings, signer
    finally:
        for thing in reversed(started):
            thing.stop()


@dataclass
class Mta:
    sendmail: Sendmail
    sink: SmtpSink
    settings: config.Settings
    signer: verpkeys.Signer
    milter: MilterProcess

    def send(self, sender: str, rcpts: list[str], raw: bytes) -> None:
        _send(self.sendmail, sender, rcpts, raw)

    def events(self, address: str) -> list[dict[str, Any]]:
        return _events(self.settings, address)


@pytest.fixture(scope="module")
def mta() -> Iterator[Mta]:
    tree = unpacked()
    if tree is None or not have_postfix():  # smtp-sink comes with Postfix
        pytest.skip("needs root, smtp-sink and Sendmail (scripts/fetch-sendmail.sh)")
    with tempfile.TemporaryDirectory(prefix="bk-sm-") as tmp:
        d = pathlib.Path(tmp)
        d.chmod(0o755)
        private = d / "milter"  # Sendmail refuses a socket in a world-writable folder
        private.mkdir(mode=0o750)
        redis = RedisServer(d / "redis")
        redis.start()
        key = d / "verp.key"
        key.write_text("sendmail-test-key-0123456789\n")
        toml = f"""[redis]
url = "{redis.url}"
[policy]
mode = "enforce"
[verp]
bounce_domain = "{BOUNCE_DOMAIN}"
secret_files = ["{key}"]
senders = ["{APP}"]
"""
        milter = MilterProcess(private, f"unix:{private}/milter.sock", toml)
        sink = SmtpSink(d / "sink")
        try:
            # No listener on the LMTP route here: see the `dsn` fixture.
            with _running(d, sink.port, milter, private / "lmtp.sock", sink) as (sendmail, settings, signer):
                yield Mta(sendmail, sink, settings, signer, milter)
        finally:
            redis.stop()


def test_sendmail_relays_outbound_mail_with_the_signed_verp_sender(mta: Mta) -> None:
    raw = f"From: {APP}\r\nSubject: sm1\r\nX-Bouncekeeper-Context: digest-3\r\n\r\nbody\r\n".encode()
    mta.send(APP, ["alice@example.net"], raw)
    msg = mta.sink.wait_for(lambda m: "Subject: sm1" in m.text)
    assert msg.sender == mta.signer.address_for("alice@example.net", "digest-3")
    assert msg.header("X-Bouncekeeper-Context") == []


def test_sendmail_hands_bounces_to_the_milter_which_records_and_drops_them(mta: Mta) -> None:
    rcpt = mta.signer.address_for("carol@example.net", "")
    mta.send("", [rcpt], (FIXTURES / "gmail-userunknown.eml").read_bytes())
    deadline = time.monotonic() + 20
    while not mta.events("carol@example.net"):
        assert time.monotonic() < deadline, f"not recorded; milter log:\n{mta.milter.log()[-2000:]}"
        time.sleep(0.1)
    assert mta.events("carol@example.net")[0]["kind"] == "permanent"
    mta.sendmail.wait_traffic("250 2.0.0")
    time.sleep(0.5)
    assert not any(rcpt in m.recipients for m in mta.sink.messages()), "a recorded bounce is discarded"


def test_sendmail_refuses_a_forged_verp_address_at_rcpt(mta: Mta) -> None:
    good = mta.signer.address_for("dave@example.net", "")
    local, _, domain = good.partition("@")
    forged = f"{local[:-1]}{'0' if local[-1] != '0' else '1'}@{domain}"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        mta.send("", [forged], (FIXTURES / "gmail-userunknown.eml").read_bytes())
    code, text = next(iter(info.value.recipients.values()))
    assert code == 550
    assert b"5.7.1" in text


# -- Sendmail's own DSNs (made in its queue, never seen by the milter) through the LMTP route ---------

GONE = "550 5.1.1 <gone@dead.test>... User unknown"
LOST = "550 5.1.1 <lost@dead.test>... User unknown"


@dataclass
class Dsn:
    sendmail: Sendmail
    remote: RemoteMx
    settings: config.Settings
    signer: verpkeys.Signer
    milter: MilterProcess
    listener: ListenerProcess
    redis: RedisServer

    def send(self, sender: str, rcpts: list[str], raw: bytes) -> None:
        _send(self.sendmail, sender, rcpts, raw)

    def events(self, address: str, timeout: float = 0.0) -> list[dict[str, Any]]:
        return _events(self.settings, address, timeout)

    def explain(self) -> str:
        return (
            f"sendmail traffic:\n{self.sendmail.traffic()[-4000:]}\n"
            f"listener log:\n{self.listener.log()[-2000:]}\nmilter log:\n{self.milter.log()[-2000:]}"
        )


@pytest.fixture(scope="module")
def dsn() -> Iterator[Dsn]:
    """Sendmail relaying to a remote that refuses gone@ at RCPT, with the shipped LMTP route in place:
    the milter and `bouncekeeper lmtp` run on one config file, as an operator runs them. The milter is in
    archive mode (`bounce_action = "accept"`), the worst case for a double record: a bounce it records
    goes on to delivery, and the route delivers the bounce domain to the listener."""
    tree = unpacked()
    if tree is None:
        pytest.skip("needs root and Sendmail (scripts/fetch-sendmail.sh)")
    with tempfile.TemporaryDirectory(prefix="bk-smd-") as tmp:
        d = pathlib.Path(tmp)
        d.chmod(0o755)
        private = d / "bk"  # Sendmail refuses sockets in a world-writable folder
        private.mkdir(mode=0o750)
        redis = RedisServer(d / "redis")
        redis.start()
        key = d / "verp.key"
        key.write_text("sendmail-dsn-test-key-0123456789\n")
        lmtp_socket = private / "lmtp.sock"
        toml = (
            settings_head(redis.url, [key], level="INFO", redis_extra=FAST_FAILING)
            + f"""[milter]
bounce_action = "accept"
[lmtp]
listen = "unix:{lmtp_socket}"
socket_mode = 0o660
"""
        )
        milter = MilterProcess(private, f"unix:{private}/milter.sock", toml)
        listener = ListenerProcess(milter.config, f"unix:{lmtp_socket}", private / "lmtp.log")
        remote = RemoteMx({"gone": Reply("RCPT", GONE), "lost": Reply("RCPT", LOST)}, collect=APP)
        try:
            with _running(d, remote.port, milter, lmtp_socket, listener, remote) as (
                sendmail,
                settings,
                signer,
            ):
                yield Dsn(sendmail, remote, settings, signer, milter, listener, redis)
        finally:
            redis.stop()


def test_the_bounce_domains_postmaster_is_this_hosts_and_every_other_address_there_the_listeners(
    dsn: Dsn,
) -> None:
    # RFC 5321 section 4.5.1, as `bouncekeeper setup sendmail` routes it: postmaster@ reaches a person
    # (the local mailer, this host's aliases), not the listener, which would refuse it with 550 5.1.1.
    verp = dsn.signer.address_for("x@example.com", "")
    mailers = dsn.sendmail.address_test(
        f"postmaster@{BOUNCE_DOMAIN}", f"Postmaster@{BOUNCE_DOMAIN}.", verp, f"nobody@{BOUNCE_DOMAIN}"
    )
    assert mailers == ["local", "local", "bouncekeeper", "bouncekeeper"], dsn.explain()


class _NoOpenRelay(Sendmail):
    def relay_mc(self) -> str:
        return ""  # Sendmail's default, as on a real site: from outside, only its own and relay domains


def test_the_shipped_snippet_takes_remote_bounces_for_the_bounce_domain_on_a_sendmail_that_is_no_open_relay(
    tmp_path: pathlib.Path,
) -> None:
    tree = unpacked()
    if tree is None:
        pytest.skip("needs root and Sendmail (scripts/fetch-sendmail.sh)")
    sendmail = _NoOpenRelay(tmp_path, tree, relay_port=25, milter_socket=f"unix:{tmp_path}/milter.sock")
    sendmail.configure()
    out = sendmail.test_mode(
        ".D{client_addr}192.0.2.1\n.D{client_name}mx.remote.example\n"
        "check_rcpt <bounces+x=example.com+1abc@bounces.example.org>\ncheck_rcpt <y@other.example>\n"
    )
    verdicts = re.findall(r"^check_rcpt +returns: (.*)$", out, re.MULTILINE)
    assert len(verdicts) == 2, out
    assert "$# error" not in verdicts[0], out
    assert "Relaying denied" in verdicts[1], out


def _outbound(subject: str, rcpt: str) -> bytes:
    return f"From: {APP}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()


def test_sendmails_own_dsn_for_a_refused_recipient_reaches_the_listener_and_is_recorded(
    dsn: Dsn,
) -> None:
    dsn.send(APP, ["gone@dead.test"], _outbound("dsn1", "gone@dead.test"))
    events = dsn.events("gone@dead.test", timeout=30)
    assert events, dsn.explain()
    assert (events[0]["kind"], events[0]["status"], events[0]["source"]) == ("permanent", "5.1.1", "lmtp")
    # The DSN went to the VERP address, over LMTP, and nowhere else (not back to the application).
    assert not dsn.remote.collected


def test_a_bounce_received_over_smtp_in_archive_mode_is_recorded_once_though_the_listener_gets_it(
    dsn: Dsn,
) -> None:
    # The milter records it at end of message and accepts it; Sendmail then delivers it by the route to
    # the listener, which finds the same bounce (same Message-ID) already recorded for the address.
    rcpt = dsn.signer.address_for("carol@example.net", "")
    before = dsn.listener.log().count(" duplicate")
    dsn.send("", [rcpt], (FIXTURES / "gmail-userunknown.eml").read_bytes())
    _wait(lambda: dsn.listener.log().count(" duplicate") > before, dsn.explain)
    events = dsn.events("carol@example.net")
    assert [(e["kind"], e["source"]) for e in events] == [("permanent", "milter")], dsn.explain()


def test_a_bounce_without_message_id_in_archive_mode_is_recorded_once_too(dsn: Dsn) -> None:
    # The dedup id is then the body's hash: the route adds no Message-Id (no F=M) and converts nothing
    # (F=8), so the milter and the listener hash the same body.
    raw = (FIXTURES / "gmail-userunknown.eml").read_bytes()
    head, sep, body = raw.partition(b"\n\n")
    head = b"\n".join(line for line in head.split(b"\n") if not line.lower().startswith(b"message-id:"))
    rcpt = dsn.signer.address_for("erin@example.net", "")
    before = dsn.listener.log().count(" duplicate")
    dsn.send("", [rcpt], head + sep + body)
    _wait(lambda: dsn.listener.log().count(" duplicate") > before, dsn.explain)
    events = dsn.events("erin@example.net")
    assert [(e["kind"], e["source"]) for e in events] == [("permanent", "milter")], dsn.explain()


def test_redis_down_keeps_sendmails_dsn_queued_and_a_queue_run_delivers_it_later(dsn: Dsn) -> None:
    dsn.redis.stop()
    try:
        dsn.send(APP, ["lost@dead.test"], _outbound("dsn-later", "lost@dead.test"))
        dsn.sendmail.wait_traffic("451 4.3.0", timeout=30)
        _wait(lambda: bool(dsn.sendmail.queued()), dsn.explain)
    finally:
        dsn.redis.start()
    # Nothing recorded, nothing lost: the DSN waits in Sendmail's queue; a queue run (the daemon's -q
    # interval in production) delivers it to the listener once Redis is back.
    assert not dsn.events("lost@dead.test")
    done = dsn.sendmail.run_queue()
    assert done.returncode == 0, done.stderr
    events = dsn.events("lost@dead.test", timeout=30)
    assert [(e["kind"], e["status"], e["source"]) for e in events] == [("permanent", "5.1.1", "lmtp")]
    assert not dsn.sendmail.queued(), dsn.explain()


def _wait(condition: Callable[[], bool], explain: Callable[[], str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, explain()
        time.sleep(0.1)
