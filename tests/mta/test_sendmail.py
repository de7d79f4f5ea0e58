"""The milter through a real Sendmail 8.17 (Debian's binary, unpacked by scripts/fetch-sendmail.sh, never
installed) configured with the shipped sendmail/bouncekeeper.mc: outbound VERP rewrite and bounce capture
(scenarios 1 and 3 of issue 4)."""

from __future__ import annotations

import pathlib
import smtplib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bouncekeeper import config, milterd, store
from tests.support.milter import MilterProcess
from tests.support.postfix import SmtpSink, have_postfix
from tests.support.redis_server import RedisServer
from tests.support.sendmail import Sendmail, unpacked

pytestmark = [pytest.mark.mta]

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures" / "milter"
BOUNCE_DOMAIN = "bounces.example.org"
APP = "app@example.org"


@dataclass
class Mta:
    sendmail: Sendmail
    sink: SmtpSink
    settings: config.Settings
    signer: milterd.Signer
    milter: MilterProcess

    def send(self, sender: str, rcpts: list[str], raw: bytes) -> None:
        # SMTP lines end in CRLF (RFC 5321 section 2.3.8); Sendmail 8.17 refuses bare LFs.
        crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        with smtplib.SMTP("127.0.0.1", self.sendmail.port, timeout=30) as smtp:
            smtp.sendmail(sender, rcpts, crlf)

    def events(self, address: str) -> list[dict[str, Any]]:
        st = store.connect(self.settings)
        try:
            return list(st.view(address).events)
        finally:
            st.close()


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
"""
        milter = MilterProcess(private, f"unix:{private}/milter.sock", toml)
        sink = SmtpSink(d / "sink")
        started: list[Any] = []
        try:
            for thing in (milter, sink):
                thing.start()
                started.append(thing)
            sendmail = Sendmail(d / "sendmail", tree, relay_port=sink.port, milter_socket=milter.socket)
            sendmail.start()
            started.append(sendmail)
            settings = config.load(milter.config)
            signer = milterd.signer_from_settings(settings)
            assert signer is not None
            yield Mta(sendmail, sink, settings, signer, milter)
        finally:
            for thing in reversed(started):
                thing.stop()
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
