"""A rehearsal of `bouncekeeper setup sendmail` as docs/sendmail.md tells an operator to run it, on the real
Sendmail 8.17 (unpacked, never installed).

The operator's Sendmail already has a milter of its own (a tiny one that adds a header, standing for
OpenDKIM, with F=T), settings of its own and a macro list of its own. The documented commands are run as
written (paths replaced); then Sendmail runs on the .cf they wrote, with `bouncekeeper milter` and
`bouncekeeper lmtp` on one config file and a scripted remote MX. Afterwards: the other milter still sees
every message, the operator's settings hold, a person's mail keeps its sender, the listed application
sender gets VERP, Sendmail's own DSN reaches the listener and Redis, and with the bouncekeeper milter
down ordinary mail still flows and a bounce is still recorded (the LMTP route). --undo restores the .mc
and the .cf byte for byte.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bouncekeeper import config, store, verpkeys
from tests.support import docs
from tests.support.header_milter import HeaderMilter
from tests.support.lifecycle import running
from tests.support.lmtp import ListenerProcess
from tests.support.milter import MilterProcess
from tests.support.postfix import ROOT
from tests.support.redis_server import RedisServer
from tests.support.remote_mx import Received, RemoteMx, Reply
from tests.support.sendmail import Sendmail, unpacked

pytestmark = [pytest.mark.mta, pytest.mark.slow]

DOC = ROOT / "docs" / "sendmail.md"
TOML = "/etc/bouncekeeper/bouncekeeper.toml"
BOUNCE_DOMAIN = "bounce.example.net"
APP = "app@example.org"
GONE = "550 5.1.1 <gone@dead.test>... User unknown"
FIXTURES = ROOT / "tests" / "fixtures" / "milter"


class SiteSendmail(Sendmail):
    """The operator's Sendmail: their filter and settings in sendmail.mc; started from the .cf on disk."""

    mc_name = "sendmail.mc"

    def __init__(
        self, directory: pathlib.Path, tree: pathlib.Path, relay_port: int, site_socket: str
    ) -> None:
        super().__init__(directory, tree, relay_port=relay_port, milter_socket=site_socket)

    def extra_mc(self) -> str:
        return (
            "define(`confMAX_MESSAGE_SIZE', `20000000')dnl\n"
            "define(`confMILTER_MACROS_EOM', `{msg_id}, {mail_addr}')dnl\n"
            f"INPUT_MAIL_FILTER(`site', `S={self.milter_socket}, F=T, T=C:10s;S:30s;R:30s;E:1m')dnl\n"
        )

    def configure(self) -> pathlib.Path:
        cf = self.directory / "sendmail.cf"
        return cf if cf.exists() else super().configure()


@dataclass
class Site:
    sendmail: SiteSendmail
    remote: RemoteMx
    milter: MilterProcess
    listener: ListenerProcess
    paths: dict[str, str]

    def send(self, sender: str, rcpt: str, raw: bytes) -> None:
        crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        with smtplib.SMTP("127.0.0.1", self.sendmail.port, timeout=30) as smtp:
            smtp.sendmail(sender, [rcpt], crlf)

    def received(self, rcpt: str, timeout: float = 30) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.remote.collected:
                if rcpt in message.recipients:
                    return message
            time.sleep(0.05)
        raise AssertionError(f"nothing for {rcpt} at the remote:\n{self.sendmail.traffic()[-3000:]}")

    def events(self, address: str, timeout: float = 30) -> list[dict[str, Any]]:
        settings = config.load(self.milter.config)
        st = store.connect(settings)
        deadline = time.monotonic() + timeout
        try:
            while not (found := list(st.view(address).events)) and time.monotonic() < deadline:
                time.sleep(0.1)
            return found
        finally:
            st.close()


@pytest.fixture
def site(redis_server: RedisServer) -> Iterator[Site]:
    tree = unpacked()
    if tree is None:
        pytest.skip("needs root and Sendmail (scripts/fetch-sendmail.sh)")
    if redis_server.proc is None:
        redis_server.start()
    with tempfile.TemporaryDirectory(prefix="bk-setupsm-") as tmp:
        d = pathlib.Path(tmp)
        d.chmod(0o755)
        private = d / "bk"  # Sendmail refuses sockets in a world-writable folder
        private.mkdir(mode=0o755)
        key = d / "verp.key"
        key.write_text("sendmail-setup-key-0123456789abcdef\n")
        toml = (
            f'[redis]\nurl = "{redis_server.url}"\n[policy]\nmode = "enforce"\n'
            f'[verp]\nbounce_domain = "{BOUNCE_DOMAIN}"\nsecret_files = ["{key}"]\nsenders = ["{APP}"]\n'
            f'[lmtp]\nlisten = "unix:{private}/lmtp.sock"\nsocket_mode = 0o666\n'
        )
        milter = MilterProcess(private, f"unix:{private}/milter.sock", toml)
        listener = ListenerProcess(milter.config, f"unix:{private}/lmtp.sock", private / "lmtp.log")
        remote = RemoteMx({"gone": Reply("RCPT", GONE)}, collect="*")
        site_milter = HeaderMilter(private / "site.sock", "X-Site-Milter", "site saw this")
        sendmail = SiteSendmail(d / "sendmail", tree, remote.port, f"unix:{site_milter.path}")
        sendmail.configure()  # the operator's sendmail.mc and sendmail.cf, before bouncekeeper
        wrapper = d / "sendmail-bin"
        wrapper.write_text(
            "#!/bin/sh\nexec " + " ".join(f"'{word}'" for word in sendmail.command()) + ' "$@"\n'
        )
        wrapper.chmod(0o755)
        paths = {
            TOML: str(milter.config),
            "/etc/mail": str(sendmail.directory),
            "/usr/share/sendmail/cf": str(tree / "usr/share/sendmail/cf"),
            "/usr/sbin/sendmail": str(wrapper),
        }
        with running(site_milter, milter, listener, remote):
            yield Site(sendmail, remote, milter, listener, paths)
            sendmail.stop()


def _message(sender: str, rcpt: str, subject: str) -> bytes:
    return f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()


def _run(block: str, paths: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    results = []
    for argv in docs.commands(block, paths):
        result = docs.run(argv)
        assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
        results.append(result)
    return results


def test_the_documented_sendmail_set_up_on_a_live_sendmail_with_a_milter_of_its_own(site: Site) -> None:
    mc, cf = site.sendmail.directory / "sendmail.mc", site.sendmail.directory / "sendmail.cf"
    original = {mc: mc.read_bytes(), cf: cf.read_bytes()}
    (setup,) = docs.fenced_blocks(DOC, "Set up")
    assert "systemctl restart sendmail" in setup
    shown, _ = _run(setup, site.paths)
    assert "sendmail -bt routes bounces+alice=example.com+1abc@bounce.example.net" in shown.stdout
    signer = verpkeys.load_signer(config.load(site.milter.config))
    assert signer is not None
    built = cf.read_text()
    assert re.search(r"^O InputMailFilters=site, bouncekeeper$", built, re.MULTILINE)
    assert "O MaxMessageSize=20000000" in built
    assert "O Milter.macros.eom={msg_id}, {mail_addr}, i" in built
    # The bounce domain's postmaster is this host's postmaster; its VERP addresses go to the listener.
    probe = f"3,0 postmaster@{BOUNCE_DOMAIN}\n3,0 {signer.address_for('x@example.com', '')}\n"
    routed = subprocess.run(
        [site.paths["/usr/sbin/sendmail"], "-C", str(cf), "-bt"], input=probe, capture_output=True, text=True
    ).stdout
    assert re.findall(r"^parse +returns: \$# (\w+)", routed, re.MULTILINE) == ["local", "bouncekeeper"]
    (again,) = _run(setup.splitlines()[1], site.paths)
    assert "nothing to change" in again.stdout

    site.sendmail.start()  # the restart: Sendmail on the .cf the set-up wrote
    # A person's mail keeps its sender; the operator's milter sees it.
    site.send("alice@example.org", "bob@remote.example", _message("alice@example.org", "bob", "person"))
    person = site.received("bob@remote.example")
    assert person.sender == "alice@example.org"
    assert b"X-Site-Milter: site saw this" in person.raw
    # The listed application sender gets VERP; the operator's milter sees that too.
    site.send(APP, "carol@remote.example", _message(APP, "carol", "newsletter"))
    app = site.received("carol@remote.example")
    assert app.sender == signer.address_for("carol@remote.example", "")
    assert b"X-Site-Milter: site saw this" in app.raw
    # Sendmail's own DSN (the remote refuses at RCPT) reaches the listener through the route.
    site.send(APP, "gone@dead.test", _message(APP, "gone", "dsn"))
    events = site.events("gone@dead.test")
    assert events, site.sendmail.traffic()[-3000:] + site.listener.log()[-2000:]
    assert (events[0]["kind"], events[0]["status"], events[0]["source"]) == ("permanent", "5.1.1", "lmtp")

    # The bouncekeeper milter down: ordinary mail still flows (no F= flag), a bounce is still recorded.
    site.milter.stop()
    site.send("alice@example.org", "dave@remote.example", _message("alice@example.org", "dave", "down"))
    assert site.received("dave@remote.example").sender == "alice@example.org"
    bounce = (FIXTURES / "gmail-userunknown.eml").read_bytes()
    site.send("", signer.address_for("erin@remote.example", ""), bounce)
    down = site.events("erin@remote.example")
    assert down, site.listener.log()[-2000:]
    assert down[0]["source"] == "lmtp"
    site.sendmail.stop()

    (undo,) = docs.fenced_blocks(DOC, "Undo")
    _run(undo, site.paths)
    assert {mc: mc.read_bytes(), cf: cf.read_bytes()} == original
    shutil.rmtree(site.sendmail.directory / "queue", ignore_errors=True)
