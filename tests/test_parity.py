"""One set of cases through every adapter (docs/decisions.md): the same verdict, reason and
recorded event whichever way a bounce arrives.

The adapters, each on the same settings and the same real Redis: the milter (Milter.testctx.TestCtx), the
LMTP listener (a real server on 127.0.0.1), the policy service's decision, the HTTP API (`POST /bounces`,
`POST /smtp-failures`, a real server), the CLI (`ingest`, `record`, `classify`) and the IMAP scanner
(`bouncekeeper imap` over a real Dovecot on 127.0.0.1, one for the session, its two folders reused).
Redis is emptied between adapters, so each records the case afresh. Where the adapters differ by design,
the test says so: only the RCPT-time adapters can refuse a forged address (the HTTP API, the CLI and the
IMAP scanner record it as forged, and the scanner leaves it in its folder); an operator's `ingest` vouches
for an expired signature that the network refuses; and the loop case is the milter's alone, as the loop
guard holds a message back before it is delivered, which the scanner of a delivered mailbox cannot.
"""

from __future__ import annotations

import functools
import imaplib
import json
import pathlib
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import Milter
import pytest
import redis

from bouncekeeper import cli, config, verpkeys
from bouncekeeper.core import verp
from bouncekeeper.daemons import httpd, imap, milterd, policyd
from bouncekeeper.daemons.http_backend import ServiceBackend
from bouncekeeper.daemons.http_handler import App
from bouncekeeper.service.bounces import Service
from tests.support.dovecot import Dovecot
from tests.support.dsn import postfix_dsn
from tests.support.lmtp import ListenerThread
from tests.support.logs import restore_logging  # noqa: F401 - autouse: cli.main reconfigures logging
from tests.support.milter_harness import INBOUND_IP, Harness, forge
from tests.support.redis_server import RedisServer

DOMAIN = "bounces.example.org"
PROTECTED = "app-in@example.org"
TOKEN = "parity-token-0123456789abcdef"
ALICE, CAROL, DAVE = "alice@example.com", "carol@example.com", "dave@example.com"
# An SMTP-time refusal, and the same reply as a remote server writes it into a DSN: one the two status
# tables judged differently before they were one (5.7.25: authfailure at SMTP time, blocked in a bounce).
REFUSAL = (550, "5.7.25", "Reverse DNS validation failed")
FOLDER, FOUND = "Parity", "Parity Found"  # the IMAP scanner's folder and backup folder

Deliver = Callable[[bytes, str], str]  # one message to one envelope recipient: what the adapter answered


@dataclass
class Site:
    settings: config.Settings
    path: pathlib.Path
    redis_url: str
    keyring: verp.Keyring

    @property
    def today(self) -> int:
        return verpkeys.today()

    def address(self, rcpt: str, *, day_offset: int = 0) -> str:
        return verp.encode(rcpt, keyring=self.keyring, bounce_domain=DOMAIN, day=self.today + day_offset)

    def flush(self) -> None:
        with redis.Redis.from_url(self.redis_url) as client:
            client.flushdb()


@pytest.fixture
def site(tmp_path: pathlib.Path, redis_db: RedisServer) -> Site:
    key = tmp_path / "verp.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    text = f"""state_dir = "{tmp_path}/state"
[redis]
url = "{redis_db.url}"
[verp]
bounce_domain = "{DOMAIN}"
secret_files = ["{key}"]
[milter]
protected_recipients = ["{PROTECTED}"]
[lmtp]
listen = "127.0.0.1:0"
[policy]
mode = "enforce"
breaker_addresses = 0
"""
    path = tmp_path / "bk.toml"
    path.write_text(text)
    ring = verp.Keyring.from_secrets([b"0123456789abcdef0123456789abcdef"])
    return Site(config.load(path), path, redis_db.url, ring)


def _events(service: Service) -> list[tuple[str, str, str | None, str | None, str | None]]:
    """What was recorded, oldest first: (kind, address, reason, status, effect)."""
    entries = [fields for _id, fields in reversed(service.store.recent(50))]
    return [(e["kind"], e.get("address"), e.get("reason"), e.get("status"), e.get("effect")) for e in entries]


# -- each adapter: deliver one bounce to one envelope recipient, answer what it said ---------------------


def via_milter(site: Site, raw: bytes, rcpt: str) -> str:
    h = Harness(site.settings)
    try:
        h.connect(INBOUND_IP)
        h.ctx._envfrom("<>")
        rc = h.ctx._envrcpt(f"<{rcpt}>")
        if rc == Milter.REJECT:
            return " ".join(h.ctx._reply[:3])
        assert rc == Milter.CONTINUE
        h.connect(INBOUND_IP)
        assert h.feed(raw, "", rcpt) in (Milter.DISCARD, Milter.ACCEPT)
        return "accept"
    finally:
        h.store.close()


def via_lmtp(site: Site, raw: bytes, rcpt: str) -> str:
    service = Service.open(site.settings)
    listener = ListenerThread(service, site.settings).start()
    try:
        with listener.lmtp_client() as client:
            client.ehlo("mta.example.test")
            client.mail("<>")
            code, text = client.rcpt(rcpt)
            if code != 250:
                status, _, words = text.decode().partition(" ")
                return f"{code} {status} {words.partition('>: ')[2]}"
            code, _ = client.data(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
            assert code == 250
            return "accept"
    finally:
        listener.stop()
        service.close()


def via_policy(site: Site, raw: bytes, rcpt: str) -> str:
    """The policy service answers at RCPT only; what it lets through goes on to the milter's listener."""
    service = Service.open(site.settings)
    try:
        request = {"request": "smtpd_access_policy", "recipient": rcpt, "sender": ""}
        action, _judged = policyd.verdict(
            request, milterd.recipient_routing(site.settings), service.check_rcpt
        )
        if not action.startswith("FILTER"):
            return action
        return via_milter(site, raw, rcpt)
    finally:
        service.close()


@pytest.fixture
def http(site: Site) -> Iterator[Callable[[str, str, bytes], tuple[int, Any]]]:
    service = Service.open(site.settings)
    app = App(ServiceBackend(service), TOKEN.encode(), config.HttpSettings())
    server = httpd.make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def post(path: str, content_type: str, body: bytes) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{server.server_address[1]}{path}"
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as reply:
            return reply.status, json.loads(reply.read())

    yield post
    server.shutdown()
    server.server_close()
    service.close()


def cli_json(site: Site, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert cli.main(["--config", str(site.path), *argv]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def scanner(site: Site, dovecot: Dovecot, tmp_path: pathlib.Path) -> Iterator[Deliver]:
    """The IMAP scanner: the message APPENDed to the scanned folder as a local delivery leaves it, with the
    envelope recipient in X-Original-To (the first of imap.ENVELOPE_HEADERS), then one `bouncekeeper imap`
    run. It answers "accept" when the run moved the message to the backup folder (a recognised bounce) and
    "left" when it left it in the folder. The two folders are emptied before each case, and reused."""
    password = tmp_path / "imap.pw"
    password.write_text(dovecot.password + "\n")
    argv = ["--config", str(site.path), "imap", "--server", "127.0.0.1", "--port", str(dovecot.imap_port),
            "--tls", "none", "--user", dovecot.user, "--password-file", str(password),
            "--folder", FOLDER, "--backup-folder", FOUND]  # fmt: skip
    conn = imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=10)
    conn.login(dovecot.user, dovecot.password)
    for folder in (FOLDER, FOUND):
        conn.create(imap.quote(folder))  # NO when an earlier test made it: the same folder, reused

    def scan(raw: bytes, rcpt: str) -> str:
        for folder in (FOLDER, FOUND):
            if _count(conn, folder):
                conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                conn.expunge()
        typ, data = conn.append(imap.quote(FOLDER), "", None, f"X-Original-To: {rcpt}\r\n".encode() + raw)
        assert typ == "OK", data
        assert cli.main(argv) == 0
        moved, left = _count(conn, FOUND), _count(conn, FOLDER)
        assert moved + left == 1
        return "accept" if moved else "left"

    yield scan
    conn.logout()


def _count(conn: imaplib.IMAP4, folder: str) -> int:
    typ, data = conn.select(imap.quote(folder))
    assert typ == "OK", data
    return int(data[0] or 0)


# -- the cases -----------------------------------------------------------------------------------------


ADAPTERS: dict[str, Callable[[Site, bytes, str], str]] = {
    "milter": via_milter,
    "lmtp": via_lmtp,
    "policy": via_policy,
}


@pytest.fixture
def ways(
    site: Site,
    http: Callable[[str, str, bytes], tuple[int, Any]],
    scanner: Deliver,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, Deliver]:
    """Every way in: the RCPT-time adapters, the HTTP API (`POST /bounces`), the CLI (`ingest`) and the
    IMAP scanner, each delivering one message to one envelope recipient."""

    def via_http(raw: bytes, rcpt: str) -> str:
        status, _body = http(f"/bounces?rcpt={quote(rcpt)}", "message/rfc822", raw)
        return "accept" if status == 200 else str(status)

    def via_cli(raw: bytes, rcpt: str) -> str:
        mail = tmp_path / "ingest.eml"
        mail.write_bytes(raw)
        cli_json(site, capsys, "ingest", str(mail), "--rcpt", rcpt, "--json")
        return "accept"

    at_rcpt = {name: functools.partial(way, site) for name, way in ADAPTERS.items()}
    return {**at_rcpt, "http": via_http, "cli": via_cli, "imap": scanner}


def test_valid_forged_expired_and_token_bounces_through_every_adapter(
    site: Site, ways: dict[str, Deliver]
) -> None:
    service = Service.open(site.settings)
    token = "parity0token0abc"
    token_fields = {"recipients": f"{CAROL}\n{DAVE}", "sender": "app@example.org", "context": ""}
    valid = site.address(ALICE)
    cases = {
        "valid": (valid, ALICE),
        "forged": (forge(valid), ALICE),
        "expired": (site.address(ALICE, day_offset=-30), ALICE),
        "token": (
            verp.encode_token(token, keyring=site.keyring, bounce_domain=DOMAIN, day=verpkeys.today()),
            CAROL,
        ),
    }
    seen: dict[str, dict[str, tuple[str, list[Any]]]] = {}
    for n, (case, (rcpt, failed)) in enumerate(cases.items()):
        assert RcptKind(service, rcpt) == case
        raw = postfix_dsn(failed, to=rcpt, n=n)
        results: dict[str, tuple[str, list[Any]]] = {}
        for name, deliver in ways.items():
            site.flush()  # each adapter records the case afresh (the store counts one bounce once)
            service.store.put_token(token, token_fields, ttl=86_400)
            results[name] = (deliver(raw, rcpt), _events(service))
        seen[case] = results

    alice = ("permanent", ALICE, "userunknown", "5.1.1", "hard")
    carol = ("permanent", CAROL, "userunknown", "5.1.1", "hard")  # the token vouches for the one named
    for name in ways:
        assert seen["valid"][name] == ("accept", [alice]), name
        assert seen["token"][name] == ("accept", [carol]), name
    for case in ("forged", "expired"):
        for name in ADAPTERS:  # at RCPT: refused, nothing recorded
            assert seen[case][name] == (f"550 5.7.1 Not a valid bounce address ({case})", []), (case, name)
    # The HTTP API cannot refuse: it records the bounce as forged, in the stream only, scored nowhere;
    # an expired signature is authentic, so that event names the address it was signed for.
    assert [e[:2] for e in seen["forged"]["http"][1]] == [("forged", None)]
    assert [e[:2] for e in seen["expired"]["http"][1]] == [("forged", ALICE)]
    assert [e[:2] for e in seen["forged"]["cli"][1]] == [("forged", None)]
    # An operator ingesting old bounces from files vouches for an expired signature (process_bounce).
    assert seen["expired"]["cli"][1] == [alice]
    # Nor can the IMAP scanner refuse what is already in the mailbox: it records what the HTTP API records
    # (core/rcpt.received, no vouching from the network) and, as that is no bounce it recognises, leaves
    # the message in the folder instead of moving it to the backup folder.
    for case in ("forged", "expired"):
        assert seen[case]["imap"] == ("left", seen[case]["http"][1]), case
    service.close()


def RcptKind(service: Service, rcpt: str) -> str:
    result = service.check_rcpt(rcpt)
    return "token" if result.token else result.status.value


def test_an_smtp_time_refusal_and_the_same_refusal_inside_a_dsn_record_the_same_event(
    site: Site,
    ways: dict[str, Deliver],
    http: Callable[[str, str, bytes], tuple[int, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = Service.open(site.settings)
    code, status, text = REFUSAL
    rcpt = site.address(ALICE)
    raw = postfix_dsn(ALICE, to=rcpt, status=status, reply=str(code), text=text)
    recorded: dict[str, list[Any]] = {}
    for name in (*ways, "http smtp-time", "cli smtp-time"):
        site.flush()
        if name in ways:
            assert ways[name](raw, rcpt) == "accept", name
        elif name == "http smtp-time":
            body = json.dumps({"address": ALICE, "code": code, "status": status, "text": text}).encode()
            assert http("/smtp-failures", "application/json", body)[0] == 200
        else:
            argv = ("record", ALICE, "--code", str(code), "--status", status, "--text", text, "--json")
            cli_json(site, capsys, *argv)
        recorded[name] = _events(service)
    # A block says nothing about the address: temporary, `blocked`, never scored, whichever the way in.
    expected = [("temporary", ALICE, "blocked", "5.7.25", "none")]
    assert recorded == dict.fromkeys(recorded, expected)
    service.close()


def test_a_loop_to_a_protected_address_is_named_in_one_vocabulary(
    site: Site, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not through the IMAP scanner: it reads bounces from a mailbox after delivery, too late to hold back a
    # loop, and takes an auto-reply there for what the HTTP API and `ingest` take it for (an `autoreply`
    # event naming no address, left in the folder), since neither knows `protected_recipients`.
    raw = (
        b"From: vacation@remote.example\r\nTo: app-in@example.org\r\nSubject: Out of office\r\n"
        b"Auto-Submitted: auto-replied\r\nX-Autoreply: yes\r\nPrecedence: bulk\r\n\r\nI am away.\r\n"
    )
    service = Service.open(site.settings)
    request = {"request": "smtpd_access_policy", "recipient": PROTECTED, "sender": "vacation@remote.example"}
    action, _judged = policyd.verdict(request, milterd.recipient_routing(site.settings), service.check_rcpt)
    assert action.startswith("FILTER")  # the policy service sends it to the milter's listener
    h = Harness(site.settings)
    h.connect(INBOUND_IP)
    assert h.feed(raw, "vacation@remote.example", PROTECTED) == Milter.DISCARD
    h.store.close()
    (loop,) = [fields for _id, fields in service.store.recent(5)]
    mail = tmp_path / "loop.eml"
    mail.write_bytes(raw)
    (classified,) = [json.loads(line) for line in cli_lines(site, capsys, "classify", "--jsonl", str(mail))]
    signals = ["auto-submitted:auto-replied", "x-autoreply", "precedence:bulk", "vacation-subject"]
    assert classified["loop_signals"] == signals
    assert (loop["kind"], loop["address"], loop["note"]) == ("loop", PROTECTED, ",".join(signals))
    service.close()


def cli_lines(site: Site, capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    capsys.readouterr()
    assert cli.main(["--config", str(site.path), *argv]) == 0
    return capsys.readouterr().out.splitlines()
