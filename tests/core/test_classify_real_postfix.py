"""Bounces written by a real Postfix 3.7, classified (a private instance on 127.0.0.1).

Postfix relays to smtp-sink instances that refuse RCPT with chosen replies; Postfix then writes its own
DSN (bounce(8)) or delay warning to the sender, which a third smtp-sink captures byte for byte. No
hand-made bounce: what the classifier reads is what Postfix sends.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator

import pytest

from bouncekeeper.core.classify import classify
from bouncekeeper.core.model import BounceKind, MessageType, Reason, Stage
from tests.support.exim import SmtpSink, free_port, scratch_dir, wait_for_port

pytestmark = [
    pytest.mark.mta,
    pytest.mark.skipif(
        shutil.which("postfix") is None or shutil.which("smtp-sink") is None or os.geteuid() != 0,
        reason="needs Postfix, smtp-sink and root",
    ),
]

SENDER = "app@example.org"


class _SoftSink(SmtpSink):
    """smtp-sink answering every RCPT with a 4xx: Postfix keeps the message and, later, warns."""

    def start(self) -> None:
        argv = ["smtp-sink", "-u", "postfix", "-r", "RCPT", f"127.0.0.1:{self.port}", "16"]
        self.proc = subprocess.Popen(argv)
        wait_for_port(self.port)


def _master_cf(port: int) -> str:
    lines = [f"127.0.0.1:{port} inet n - n - - smtpd", "postlog unix-dgram n - n - 1 postlogd"]
    for line in pathlib.Path("/usr/share/postfix/master.cf.dist").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[1] in ("unix", "fifo") and not line.startswith("#"):
            fields[4] = "n"  # no chroot: the private instance has no chroot tree
            lines.append(" ".join(fields[:8]) + (" " + " ".join(fields[8:]) if fields[8:] else ""))
    return "\n".join(lines) + "\n"


class _Postfix:
    def __init__(self, directory: pathlib.Path, transports: dict[str, int], catch_port: int) -> None:
        self.dir = directory
        self.port = free_port()
        etc = directory / "etc"
        etc.mkdir()
        (directory / "data").mkdir()
        shutil.chown(directory / "data", "postfix")
        (directory / "spool").mkdir()  # `postfix start` creates the queue folders inside it
        transport = " ".join(f"{domain}=smtp:[127.0.0.1]:{port}" for domain, port in transports.items())
        (etc / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {directory}/spool
data_directory = {directory}/data
mail_owner = postfix
setgid_group = postdrop
inet_protocols = ipv4
inet_interfaces = 127.0.0.1
myhostname = mta.example.test
mydestination =
local_recipient_maps =
alias_maps =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{catch_port}
transport_maps = inline:{{ {transport} }}
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = {directory}/maillog
maillog_file_prefixes = {directory}
delay_warning_time = 1s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""
        )
        (etc / "master.cf").write_text(_master_cf(self.port))

    def _postfix(self, action: str) -> None:
        # postfix prints its errors only to a terminal: `script` gives it one.
        subprocess.run(
            ["script", "-qec", f"postfix -c {self.dir}/etc {action}", "/dev/null"],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        self._postfix("start")
        wait_for_port(self.port)

    def stop(self) -> None:
        # Never raises: teardown must still stop the sinks after a failed start.
        subprocess.run(
            ["script", "-qec", f"postfix -c {self.dir}/etc stop", "/dev/null"],
            check=False,
            capture_output=True,
            timeout=60,
        )

    def send(self, recipients: list[str]) -> None:
        body = (
            f"From: {SENDER}\r\nTo: {', '.join(recipients)}\r\nSubject: newsletter\r\n"
            "Message-ID: <newsletter-1@example.org>\r\n\r\nHello.\r\n"
        )
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
            smtp.sendmail(SENDER, recipients, body)


@pytest.fixture(scope="module")
def captured() -> Iterator[list[bytes]]:
    """Start Postfix and the sinks once, send two messages, return the bounces Postfix wrote."""
    directory = scratch_dir("bk-postfix-")
    gone = SmtpSink(directory / "gone", reject_rcpt="550 5.1.1 Recipient address rejected: User unknown")
    full = SmtpSink(directory / "full", reject_rcpt="552 5.2.2 Mailbox full, over quota")
    slow = _SoftSink(directory / "slow")
    catch = SmtpSink(directory / "catch")
    sinks = [gone, full, slow, catch]
    postfix = _Postfix(
        directory, {"dead.test": gone.port, "full.test": full.port, "slow.test": slow.port}, catch.port
    )
    try:
        for sink in sinks:
            sink.start()
        postfix.start()
        postfix.send(["alice@dead.test", "bob@full.test"])
        postfix.send(["carol@slow.test"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(catch.messages()) < 2:
            time.sleep(0.2)
        yield [m.raw for m in catch.messages() if m.sender == ""]
    finally:
        try:
            postfix.stop()
        finally:
            for sink in sinks:
                sink.stop()
            shutil.rmtree(directory, ignore_errors=True)


def _by_type(captured: list[bytes], message_type: MessageType) -> list[bytes]:
    return [raw for raw in captured if classify(raw).message_type is message_type]


def test_postfix_dsn_with_two_outcomes(captured: list[bytes]) -> None:
    (raw,) = _by_type(captured, MessageType.BOUNCE)
    result = classify(raw, envelope_sender="")
    got = {f.recipient: (f.kind, f.reason, f.status, f.reply_code, f.stage) for f in result.failures}
    assert got == {
        "alice@dead.test": (BounceKind.PERMANENT, Reason.USERUNKNOWN, "5.1.1", 550, Stage.DSN),
        "bob@full.test": (BounceKind.TEMPORARY, Reason.MAILBOXFULL, "5.2.2", 552, Stage.DSN),
    }
    assert result.original_message_id == "<newsletter-1@example.org>"
    assert "null-sender" in result.loop_signals
    assert "auto-submitted:auto-replied" in result.loop_signals  # Postfix marks its bounces so


def test_postfix_delay_warning_is_a_delay(captured: list[bytes]) -> None:
    (raw,) = _by_type(captured, MessageType.DELAY)
    result = classify(raw)
    assert result.failures == ()
    assert [d.recipient for d in result.delays] == ["carol@slow.test"]
