"""One set of cases through every adapter (docs/decisions.md): the same verdict, reason and
recorded event whichever way a bounce arrives.

The adapters, each on the same settings and the same real Redis: the milter (Milter.testctx.TestCtx), the
LMTP listener (a real server on 127.0.0.1), the policy service's decision, the HTTP API (`POST /bounces`,
`POST /smtp-failures`, a real server) and the CLI (`ingest`, `record`, `classify`). Redis is emptied
between adapters, so each records the case afresh. Where the adapters differ by design, the test says so:
only the RCPT-time adapters can refuse a forged address (the HTTP API and the CLI record it as forged),
and an operator's `ingest` vouches for an expired signature that the network refuses.
"""

from __future__ import annotations

import json
import pathlib
import smtplib
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
from bouncekeeper.daemons import httpd, milterd, policyd
from bouncekeeper.daemons.http_backend import ServiceBackend
from bouncekeeper.daemons.http_handler import App
from bouncekeeper.service.bounces import Service
from tests.daemons.test_lmtpd import forge
from tests.support.dsn import postfix_dsn
from tests.support.lmtp import ListenerThread
from tests.support.logs import restore_logging  # noqa: F401 - autouse: cli.main reconfigures logging
from tests.support.milter_harness import INBOUND_IP, Harness
from tests.support.redis_server import RedisServer

DOMAIN = "bounces.example.org"
PROTECTED = "app-in@example.org"
TOKEN = "parity-token-0123456789abcdef"
ALICE, CAROL, DAVE = "alice@example.com", "carol@example.com", "dave@example.com"
# An SMTP-time refusal, and the same reply as a remote server writes it into a DSN: one the two status
# tables judged differently before they were one (5.7.25: authfailure at SMTP time, blocked in a bounce).
REFUSAL = (550, "5.7.25", "Reverse DNS validation failed")


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
        address = listener.lmtp_address
        assert isinstance(address, tuple)
        host, port = address
        with smtplib.LMTP(host, port, timeout=10) as client:
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


# -- the cases -----------------------------------------------------------------------------------------


ADAPTERS: dict[str, Callable[[Site, bytes, str], str]] = {
    "milter": via_milter,
    "lmtp": via_lmtp,
    "policy": via_policy,
}


def test_valid_forged_expired_and_token_bounces_through_every_adapter(
    site: Site,
    http: Callable[[str, str, bytes], tuple[int, Any]],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
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
        mail = tmp_path / f"{case}.eml"
        mail.write_bytes(raw)
        results: dict[str, tuple[str, list[Any]]] = {}
        for name in (*ADAPTERS, "http", "cli"):
            site.flush()  # each adapter records the case afresh (the store counts one bounce once)
            service.store.put_token(token, token_fields, ttl=86_400)
            if name == "http":
                status, _body = http(f"/bounces?rcpt={quote(rcpt)}", "message/rfc822", raw)
                answer = "accept" if status == 200 else str(status)
            elif name == "cli":
                cli_json(site, capsys, "ingest", str(mail), "--rcpt", rcpt, "--json")
                answer = "accept"
            else:
                answer = ADAPTERS[name](site, raw, rcpt)
            results[name] = (answer, _events(service))
        seen[case] = results

    alice = ("permanent", ALICE, "userunknown", "5.1.1", "hard")
    carol = ("permanent", CAROL, "userunknown", "5.1.1", "hard")  # the token vouches for the one named
    for name in (*ADAPTERS, "http", "cli"):
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
    service.close()


def RcptKind(service: Service, rcpt: str) -> str:
    result = service.check_rcpt(rcpt)
    return "token" if result.token else result.status.value


def test_an_smtp_time_refusal_and_the_same_refusal_inside_a_dsn_record_the_same_event(
    site: Site,
    http: Callable[[str, str, bytes], tuple[int, Any]],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = Service.open(site.settings)
    code, status, text = REFUSAL
    rcpt = site.address(ALICE)
    raw = postfix_dsn(ALICE, to=rcpt, status=status, reply=str(code), text=text)
    mail = tmp_path / "refusal.eml"
    mail.write_bytes(raw)
    recorded: dict[str, list[Any]] = {}
    for name in (*ADAPTERS, "http", "cli", "http smtp-time", "cli smtp-time"):
        site.flush()
        if name in ADAPTERS:
            assert ADAPTERS[name](site, raw, rcpt) == "accept"
        elif name == "http":
            assert http(f"/bounces?rcpt={quote(rcpt)}", "message/rfc822", raw)[0] == 200
        elif name == "cli":
            cli_json(site, capsys, "ingest", str(mail), "--rcpt", rcpt, "--json")
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
