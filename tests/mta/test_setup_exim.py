"""Rehearsals of `bouncekeeper setup exim` as docs/exim.md tells an operator to run it, on real Exim 4.96.

- Debian's split layout (Debian's own conf.d, an operator's relay domain and data ACL file of their own):
  the documented commands, then update-exim4.conf, then Exim's address tests (-bt, -d+route) and SMTP
  sessions through the ACLs (-bh); a second --apply changes nothing; --undo restores every file.
- A single hand-written configuration with its own ACLs, routers and local mailboxes, run as a daemon
  with smtp-sink as the remote MX and `bouncekeeper lmtp` on Redis: after the documented steps, local
  mail keeps its sender, the listed application sender gets VERP, a remote bounce and Exim's own bounce
  are recorded in Redis, the operator's ACLs still act; --undo restores the file byte for byte.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from bouncekeeper import config, verpkeys
from bouncekeeper.core import verp
from bouncekeeper.store import Store, connect
from tests.support import docs
from tests.support.exim import EXIM_USER, ROOT, Exim, SmtpSink, exim_binary, run_exim, scratch_dir
from tests.support.lifecycle import running
from tests.support.lmtp import ListenerProcess
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.mta

DOC = ROOT / "docs" / "exim.md"
SECRET = "7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29"
BOUNCE_DOMAIN = "bounce.example.net"
APP = "app@example.org"
PROTECTED = "noreply@example.com"
TOML = "/etc/bouncekeeper/bouncekeeper.toml"
FIXTURES = ROOT / "tests" / "fixtures" / "lmtp"


def _toml(
    directory: pathlib.Path, key: pathlib.Path, redis_url: str, listen: str, protected: str = APP
) -> pathlib.Path:
    conf = directory / "bk.toml"
    conf.write_text(
        f'state_dir = "{directory / "state"}"\n'
        f'[verp]\nbounce_domain = "{BOUNCE_DOMAIN}"\nsecret_files = ["{key}"]\nsenders = ["{APP}"]\n'
        f'[milter]\nprotected_recipients = ["{protected}"]\n'
        f'[redis]\nurl = "{redis_url}"\n'
        f'[lmtp]\nlisten = "{listen}"\nsocket_mode = 0o666\n'
    )
    return conf


def _key(directory: pathlib.Path) -> pathlib.Path:
    # CRLF on purpose: Exim must sign with the key bouncekeeper reads (trimmed), not with a trailing CR.
    key = directory / "verp.key"
    key.write_bytes(SECRET.encode() + b"\r\n")
    key.chmod(0o644)
    return key


def _run_documented(block: str, paths: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    results = []
    for argv in docs.commands(block, paths):
        result = docs.run(argv, extra_path=(exim_binary().parent,))
        assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
        results.append(result)
    return results


def _snapshot(directory: pathlib.Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def _vaddr(rcpt: str) -> str:
    ring = verp.Keyring.from_secrets([SECRET.encode()])
    return verp.encode(rcpt, keyring=ring, bounce_domain=BOUNCE_DOMAIN, day=verpkeys.today())


def _status(address: str) -> verp.VerpStatus:
    ring = verp.Keyring.from_secrets([SECRET.encode()])
    today = verpkeys.today()
    return verp.decode(
        address, keyring=ring, bounce_domain=BOUNCE_DOMAIN, today=today, max_age_days=14
    ).status


# --- Debian's split layout ---------------------------------------------------------------------------


class Debian:
    """/etc/exim4 as Debian ships it, with an operator's own settings, in a scratch folder."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.dir = directory
        self.binary = exim_binary()
        self.etc = directory / "etc"
        shutil.copytree(self.binary.parents[2] / "etc" / "exim4", self.etc)
        (self.etc / "update-exim4.conf.conf").write_text(
            "dc_eximconfig_configtype='smarthost'\ndc_other_hostnames='example.org'\n"
            "dc_local_interfaces='127.0.0.1'\ndc_readhost=''\ndc_relay_domains='relay.example.com'\n"
            "dc_minimaldns='false'\ndc_relay_nets=''\ndc_smarthost='127.0.0.1::2526'\nCFILEMODE='644'\n"
            "dc_use_split_config='true'\ndc_hide_mailname=''\ndc_mailname_in_oh='true'\n"
            "dc_localdelivery='mail_spool'\n"
        )
        # The operator's own macros and data ACL file (the hook bouncekeeper must keep).
        (self.etc / "conf.d" / "main" / "00_local_site").write_text(
            f".ifndef CONFDIR\nCONFDIR = {self.etc}\n.endif\nSPOOLDIR = {directory / 'spool'}\n"
            "CHECK_DATA_LOCAL_ACL_FILE = CONFDIR/site_data_acl\n"
        )
        (self.etc / "site_data_acl").write_text(
            "deny    condition = ${if def:h_X-Site-Block:}\n"
            "        message = the site's own data ACL says no\n"
        )
        (directory / "spool").mkdir()
        shutil.chown(directory / "spool", EXIM_USER)  # -bh writes its spool as the Exim user
        self.config = directory / "exim4.conf"

    def assemble(self) -> None:
        update = self.binary.parent / "update-exim4.conf"
        subprocess.run(["sh", str(update), "-d", str(self.etc), "-o", str(self.config)], check=True)

    def run(self, *args: str, stdin: str = "") -> str:
        result = run_exim(self.binary, self.config, *args, stdin=stdin)
        return result.stdout + result.stderr


def _bh(exim: Debian, sender: str, rcpt: str, header: str = "", client: str = "127.0.0.1") -> str:
    return exim.run(
        "-bh",
        client,
        stdin=f"EHLO client.example.net\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
        f"From: x@example.net\r\nSubject: hi\r\n{header}\r\nbody\r\n.\r\nQUIT\r\n",
    )


def test_the_documented_split_layout_set_up_merges_checks_and_undoes_byte_for_byte() -> None:
    directory = scratch_dir("bk-setupd-")
    try:
        debian = Debian(directory)
        listen = f"unix:{directory}/lmtp.sock"
        conf = _toml(directory, _key(directory), "unix:///nonexistent/redis.sock", listen, PROTECTED)
        paths = {TOML: str(conf), "/etc/exim4": str(debian.etc)}
        before = _snapshot(debian.etc)
        split, _single = docs.fenced_blocks(DOC, "Set up")
        assert "update-exim4.conf && systemctl reload exim4" in split
        show, apply = split.splitlines()[:2]
        (shown,) = _run_documented(show, paths)
        assert "+dc_relay_domains='relay.example.com;bounce.example.net'" in shown.stdout
        assert "exim -bV accepts the staged configuration" in shown.stdout
        assert _snapshot(debian.etc) == before  # shown, not written
        assert "--apply" in apply
        _run_documented(apply, paths)
        assert _snapshot(debian.etc) != before
        debian.assemble()
        assert "Configuration file is" in debian.run("-bV")

        # The way back: VERP addresses to the listener, postmaster kept, anything else refused.
        out = debian.run(
            "-bt", _vaddr("alice@example.com"), f"postmaster@{BOUNCE_DOMAIN}", f"x@{BOUNCE_DOMAIN}"
        )
        assert "router = bouncekeeper_bounces, transport = bouncekeeper_lmtp" in out
        assert f"x@{BOUNCE_DOMAIN} is undeliverable: not a bounce address" in out
        assert f"<-- postmaster@{BOUNCE_DOMAIN}" in out  # redirected to this host's postmaster
        assert "250 Accepted" in _bh(debian, "", _vaddr("alice@example.com"), client="192.0.2.1")
        # Outbound: the listed sender's mail gets the signed VERP address (the key file has CRLF line ends).
        routed = debian.run("-f", APP, "-d+route", "-bt", "Bob@Example.COM")
        match = re.search(r"errors to (\S+)", routed)
        assert match, routed
        assert _status(match.group(1)) is verp.VerpStatus.VALID
        assert "errors to" not in debian.run(
            "-f", "someone@example.org", "-d+route", "-bt", "bob@example.com"
        )
        # The loop guard, and the operator's own data ACL file still acting.
        assert "DATA ACL discarded recipients" in _bh(debian, "", PROTECTED)
        assert "250 OK id=" in _bh(debian, "x@example.net", PROTECTED)
        assert "250 OK id=" in _bh(debian, "x@example.net", PROTECTED)

        (again,) = _run_documented(apply, paths)
        assert "nothing to change" in again.stdout
        (undo,) = docs.fenced_blocks(DOC, "Undo")
        _run_documented(undo, paths)
        assert _snapshot(debian.etc) == before
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- one hand-written file, run as a daemon ------------------------------------------------------------


class Site:
    def __init__(self, directory: pathlib.Path, redis: RedisServer) -> None:
        self.dir = directory
        key = _key(directory)
        self.sink = SmtpSink(directory / "sink")
        self.dead = SmtpSink(
            directory / "dead",
            reject_rcpt="550 5.1.1 <gone@dead.test>: Recipient address rejected: User unknown",
        )
        socket_path = directory / "lmtp.sock"
        (directory / "bk").mkdir()
        self.conf = _toml(directory / "bk", key, redis.url, f"unix:{socket_path}")
        self.listener = ListenerProcess(self.conf, f"unix:{socket_path}", directory / "bk" / "listener.log")
        self.mail = directory / "mail"
        self.mail.mkdir()
        shutil.chown(self.mail, EXIM_USER)
        self.etc = directory / "etc"
        self.etc.mkdir()
        (directory / "exim").mkdir()
        self.file = self.etc / "exim4.conf"
        self.exim = Exim(directory / "exim", {}, site_config=self.file)
        template = (ROOT / "tests" / "mta" / "site_exim.conf.in").read_text()
        self.file.write_text(
            template.replace("@SETTINGS@", self.exim.site_settings().rstrip("\n"))
            .replace("@SINK@", str(self.sink.port))
            .replace("@DEAD@", str(self.dead.port))
            .replace("@MAIL@", str(self.mail))
        )
        self.store: Store = connect(config.loads(f'[redis]\nurl = "{redis.url}"\n'))

    def send(self, sender: str, rcpt: str, **headers: str) -> None:
        msg = EmailMessage()
        msg["From"] = sender or "mailer-daemon@remote.example"
        msg["To"] = rcpt
        msg["Subject"] = "rehearsal"
        for name, value in headers.items():
            msg[name.replace("_", "-")] = value
        msg.set_content("hello\n")
        with smtplib.SMTP("127.0.0.1", self.exim.port, timeout=10) as smtp:
            smtp.send_message(msg, from_addr=sender or "<>", to_addrs=[rcpt])

    def events(self, address: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not (found := self.store.view(address).events) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def sunk(self, sink: SmtpSink, rcpt: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in sink.messages():
                if rcpt in message.recipients:
                    return message
            time.sleep(0.05)
        raise AssertionError(f"nothing for {rcpt} at the sink:\n{self.exim.mainlog()}")


@pytest.fixture(scope="module")
def site(redis_server: RedisServer) -> Iterator[Site]:
    if redis_server.proc is None:
        redis_server.start()
    s = Site(scratch_dir("bk-setups-"), redis_server)
    with running(s.sink, s.dead, s.listener):
        yield s
    s.store.close()
    shutil.rmtree(s.dir, ignore_errors=True)


@pytest.mark.slow
def test_the_documented_single_file_set_up_on_a_live_exim(site: Site, redis_server: RedisServer) -> None:
    original = site.file.read_bytes()
    paths = {TOML: str(site.conf), "/etc/exim4": str(site.etc)}
    _split, single = docs.fenced_blocks(DOC, "Set up")
    assert "systemctl reload exim4" in single
    _run_documented(single, paths)
    assert b"# BEGIN bouncekeeper" in site.file.read_bytes()
    with running(site.exim):  # the reload: the daemon starts on the merged file
        # People's mail keeps its sender, inbound and outbound; the site's data ACL still adds its header.
        site.send("friend@remote.example", "alice@example.org")
        site.exim.wait_for_log(r"=> alice <alice@example\.org> .*T=local_mailbox")
        mailbox = (site.mail / "alice").read_text()
        assert "Return-path: <friend@remote.example>" in mailbox
        assert "X-Site-Check: the site's own data ACL saw this" in mailbox
        site.send("alice@example.org", "carol@remote.example")
        assert site.sunk(site.sink, "carol@remote.example").sender == "alice@example.org"
        # The listed application sender: a signed VERP address at the remote MX.
        site.send(APP, "dave@remote.example")
        sent = site.sunk(site.sink, "dave@remote.example")
        assert _status(sent.sender) is verp.VerpStatus.VALID
        assert b"X-Site-Check:" in sent.raw
        # A remote server's bounce to that address, and Exim's own bounce: both recorded in Redis.
        with smtplib.SMTP("127.0.0.1", site.exim.port, timeout=10) as smtp:
            raw = (FIXTURES / "lhost-postfix-30.eml").read_bytes()
            smtp.sendmail("<>", [_vaddr("kijitora@example.br")], re.sub(rb"\r?\n", b"\r\n", raw))
        assert site.events("kijitora@example.br"), site.exim.mainlog()
        site.send(APP, "gone@dead.test")
        events = site.events("gone@dead.test")
        assert events, site.exim.mainlog() + site.listener.log()
        assert (events[0]["kind"], events[0]["status"]) == ("permanent", "5.1.1")
        assert "=> app@example.org" not in site.exim.mainlog()
        # The bounce domain's postmaster reaches a person; from outside (-bh: a session from a remote
        # address, nothing delivered) VERP addresses are accepted and nonsense is refused at RCPT.
        site.send("someone@remote.example", f"postmaster@{BOUNCE_DOMAIN}")
        site.exim.wait_for_log(r"=> postmaster <postmaster@bounce\.example\.net> .*T=local_mailbox")
        for rcpt, reply in ((_vaddr("x@example.com"), "250 Accepted"), (f"nobody@{BOUNCE_DOMAIN}", "550 ")):
            session = f"EHLO mx.remote.example\r\nMAIL FROM:<>\r\nRCPT TO:<{rcpt}>\r\nQUIT\r\n"
            assert reply in site.exim.run("-bh", "192.0.2.1", stdin=session).stdout
        # Redis away: the listener answers 451 and the bounce waits in Exim's queue until it is recorded.
        later = _vaddr("later@example.org")
        redis_server.stop()
        try:
            with smtplib.SMTP("127.0.0.1", site.exim.port, timeout=10) as smtp:
                smtp.sendmail("<>", [later], re.sub(rb"\r?\n", b"\r\n", raw))
            site.exim.wait_for_log(rf"== {re.escape(later)} .*451 4\.3\.0", timeout=30)
        finally:
            redis_server.start()
        deadline = time.monotonic() + 60
        while not site.events("later@example.org", timeout=5.0) and time.monotonic() < deadline:
            assert site.exim.run("-qff").returncode == 0  # the retry, now rather than at its time
        assert site.events("later@example.org", timeout=0), site.exim.mainlog()
    (undo,) = docs.fenced_blocks(DOC, "Undo")
    _run_documented(undo, paths)
    assert site.file.read_bytes() == original
    assert not os.path.exists(site.conf.parent / "state" / "setup-exim" / "manifest.json")


def test_debians_non_split_template_is_merged_where_its_acls_and_routers_are() -> None:
    directory = scratch_dir("bk-setupt-")
    try:
        debian = Debian(directory)
        debconf = debian.etc / "update-exim4.conf.conf"
        debconf.write_text(
            debconf.read_text().replace("dc_use_split_config='true'", "dc_use_split_config='false'")
        )
        conf = _toml(
            directory, _key(directory), "unix:///nonexistent/redis.sock", "127.0.0.1:8024", PROTECTED
        )
        before = _snapshot(debian.etc)
        template = str(debian.etc / "exim4.conf.template")
        command = ["bouncekeeper", "--config", str(conf), "setup", "exim", "--exim-config", template]
        applied = docs.run([*command, "--apply"], extra_path=(exim_binary().parent,))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "then run: update-exim4.conf && systemctl reload exim4" in applied.stdout
        debian.assemble()
        out = debian.run("-bt", _vaddr("alice@example.com"))
        assert "router = bouncekeeper_bounces, transport = bouncekeeper_lmtp_tcp" in out
        assert "250 Accepted" in _bh(debian, "", _vaddr("alice@example.com"), client="192.0.2.1")
        assert "DATA ACL discarded recipients" in _bh(debian, "", PROTECTED)
        assert "250 OK id=" in _bh(debian, "x@example.net", PROTECTED)
        undone = docs.run([*command, "--undo"], extra_path=(exim_binary().parent,))
        assert undone.returncode == 0, undone.stderr
        assert _snapshot(debian.etc) == before
    finally:
        shutil.rmtree(directory, ignore_errors=True)
