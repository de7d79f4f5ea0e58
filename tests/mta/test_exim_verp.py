"""Exim 4.96 with exim/exim4.conf.example: signed VERP computed by Exim itself, and the loop-guard ACL.

Real Exim (Debian's binary, unpacked), smtp-sink as the remote MX; nothing here needs bouncekeeper's
listener (tests/mta/test_exim_bounces.py covers the way back).
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from bouncekeeper import cli, verpkeys
from bouncekeeper.core import verp
from tests.support.exim import Exim, SinkMessage, SmtpSink, scratch_dir
from tests.support.lifecycle import running
from tests.support.logs import restore_logging  # noqa: F401 - autouse: cli.main reconfigures logging

pytestmark = pytest.mark.mta

SECRET = "3f9a0c1d5e7b2a4c6e8f0a1b3c5d7e9f"
BOUNCE_DOMAIN = "bounce.example.net"
APP = "app@example.org"


class Setup:
    def __init__(self, directory: pathlib.Path) -> None:
        self.dir = directory
        self.key = directory / "verp.key"
        self.key.write_text(SECRET + "\n")
        self.key.chmod(0o644)
        self.conf = directory / "bk.toml"
        self.conf.write_text(f'[verp]\nbounce_domain = "{BOUNCE_DOMAIN}"\nsecret_files = ["{self.key}"]\n')
        self.sink = SmtpSink(directory / "sink")
        self.exim = Exim(
            directory / "exim",
            {
                "BK_KEYFILE": str(self.key),
                "BK_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
                "BK_SENDERS": APP,
                "BK_LMTP_SOCKET": str(directory / "lmtp.sock"),
                "BK_LOCAL_DOMAINS": "",
                "BK_RELAY_ROUTES": f"<; * 127.0.0.1::{self.sink.port} byname",
            },
        )

    def bouncekeeper(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `bouncekeeper` command's code (cli.main), run in this process: a python start-up costs
        a second on a busy machine, and test_cli_verp.py covers the command itself."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--config", str(self.conf), *args])
        return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    directory = scratch_dir("bk-exim-")
    (directory / "exim").mkdir()
    s = Setup(directory)
    with running(s.sink, s.exim):
        yield s
    shutil.rmtree(directory, ignore_errors=True)


def _send(setup: Setup, sender: str, recipients: list[str], **headers: str) -> None:
    msg = EmailMessage()
    msg["From"] = sender or "mailer-daemon@example.net"
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = "test"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("hello\n")
    with smtplib.SMTP("127.0.0.1", setup.exim.port) as smtp:
        smtp.send_message(msg, from_addr=sender, to_addrs=recipients)


def _sink_wait(setup: Setup, count: int) -> list[SinkMessage]:
    deadline = time.monotonic() + 15
    while len(found := setup.sink.messages()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_the_example_config_is_valid(setup: Setup) -> None:
    result = setup.exim.run("-bV")
    assert result.returncode == 0, result.stderr


def test_outbound_mail_leaves_with_exims_signed_verp_sender_one_envelope_per_recipient(setup: Setup) -> None:
    setup.sink.clear()
    recipients = ["alice@example.com", "Bob.Smith+news@Example.COM", "c=d@example.com"]
    _send(setup, APP, recipients)
    messages = _sink_wait(setup, 3)
    assert len(messages) == 3
    by_rcpt = {m.recipients: m.sender for m in messages}
    # Exim lower-cases the local part when it routes (caseful_local_part is off): so does the VERP body.
    assert sorted(by_rcpt) == [("alice@example.com",), ("bob.smith+news@example.com",), ("c=d@example.com",)]
    for (rcpt,), sender in by_rcpt.items():
        day = int(re.fullmatch(r".*\+(\d+)[0-9a-f]{12}@.*", sender).group(1))  # type: ignore[union-attr]
        assert day in (verpkeys.today(), verpkeys.today() - 1)  # a run across midnight
        encoded = setup.bouncekeeper("verp", "encode", rcpt, "--day", str(day))
        assert encoded.returncode == 0, encoded.stderr
        assert json.loads(encoded.stdout)["address"] == sender
        decoded = setup.bouncekeeper("verp", "decode", sender)
        assert decoded.returncode == 0, decoded.stdout
        result = json.loads(decoded.stdout)
        assert (result["status"], result["recipient"]) == ("valid", rcpt)
        assert result["key_id"] == verp.key_id_of(SECRET.encode())


def test_mail_from_other_senders_keeps_its_sender(setup: Setup) -> None:
    setup.sink.clear()
    _send(setup, "someone@example.org", ["alice@example.com", "bob@example.com"])
    (message,) = _sink_wait(setup, 1)
    assert message.sender == "someone@example.org"
    assert sorted(message.recipients) == ["alice@example.com", "bob@example.com"]


def test_a_recipient_too_long_for_verp_keeps_the_plain_sender(setup: Setup) -> None:
    setup.sink.clear()
    fits = "f" * (38 - len("=example.com")) + "@example.com"
    too_long = "l" + fits
    _send(setup, APP, [fits, too_long])
    messages = _sink_wait(setup, 2)
    senders = {m.recipients[0]: m.sender for m in messages}
    assert senders[too_long] == APP
    assert len(senders[fits].partition("@")[0]) == 64
    assert setup.bouncekeeper("verp", "decode", senders[fits]).returncode == 0


_LOOPS = {
    "null sender": ("", {}),
    "multipart/report": (
        "mailer@example.net",
        {"Content-Type": 'multipart/report; report-type="delivery-status"'},
    ),
    "precedence bulk": ("list@example.net", {"Precedence": "bulk"}),
    "precedence junk": ("list@example.net", {"Precedence": "junk"}),
    "precedence list": ("list@example.net", {"Precedence": "list"}),
    "auto-submitted": ("vacation@example.net", {"Auto-Submitted": "auto-replied"}),
}


def _bh(setup: Setup, sender: str, rcpt: str, headers: dict[str, str], host: str = "192.0.2.10") -> str:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    session = (
        f"EHLO client.example.net\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
        f"From: x@example.net\r\nSubject: hi\r\n{head}\r\nbody\r\n.\r\nQUIT\r\n"
    )
    result = setup.exim.run("-bh", host, stdin=session)
    return result.stdout + result.stderr


@pytest.mark.parametrize("case", sorted(_LOOPS))
def test_loop_guard_discards_automatic_mail_to_a_protected_address_in_bh(setup: Setup, case: str) -> None:
    sender, headers = _LOOPS[case]
    out = _bh(setup, sender, APP, headers)
    assert "DATA ACL discarded recipients" in out, out
    assert "bouncekeeper loop guard" in out


@pytest.mark.parametrize(
    ("sender", "rcpt", "headers"),
    [
        ("person@example.net", APP, {}),
        ("person@example.net", APP, {"Auto-Submitted": "no", "Precedence": "first-class"}),
        ("", "other@example.org", {}),
    ],
)
def test_loop_guard_lets_human_mail_and_other_addresses_through_in_bh(
    setup: Setup, sender: str, rcpt: str, headers: dict[str, str]
) -> None:
    # From the relay host 127.0.0.1: other@example.org is not ours, so only a relay client may send to it.
    out = _bh(setup, sender, rcpt, headers, host="127.0.0.1")
    assert "250 OK id=" in out, out
    assert "discarded" not in out


def test_bounce_domain_refuses_addresses_that_are_not_verp_shaped_but_postmaster_in_bh(setup: Setup) -> None:
    out = _bh(setup, "", f"nobody@{BOUNCE_DOMAIN}", {})
    assert re.search(r"^550 .*not a bounce address", out, re.MULTILINE), out
    # RFC 5321 section 4.5.1: postmaster (and abuse) there reach a person (test_exim_bounces.py delivers).
    for name in ("postmaster", "abuse"):
        out = _bh(setup, "", f"{name}@{BOUNCE_DOMAIN}", {})
        assert re.search(r"^250 Accepted", out, re.MULTILINE), out


def test_loop_guard_discards_in_the_daemon_and_delivers_the_rest(setup: Setup) -> None:
    setup.sink.clear()
    _send(setup, "", [APP])
    _send(setup, "vacation@example.net", [APP], Auto_Submitted="auto-replied")
    _send(setup, "person@example.net", [APP], Subject_Tag="human")
    (message,) = _sink_wait(setup, 1)
    assert message.sender == "person@example.net"
    log = setup.exim.mainlog()
    assert (
        len(re.findall(r"=> blackhole \(DATA ACL discarded recipients\): bouncekeeper loop guard", log)) >= 2
    )
