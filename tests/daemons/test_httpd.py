"""The HTTP API and admin page over a real server on 127.0.0.1, with the real store in a real Redis."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import bouncekeeper
from bouncekeeper import cli, config
from bouncekeeper.config import RedisSettings
from bouncekeeper.core import verp
from bouncekeeper.core.scoring import Effect, Mode, Rules, State
from bouncekeeper.daemons import http_admin, http_api, httpd, httpserver, metrics
from bouncekeeper.daemons.http_backend import ServiceBackend
from bouncekeeper.daemons.http_handler import App
from bouncekeeper.service.bounces import Service
from bouncekeeper.store import Store
from bouncekeeper.store.event import Event, EventKind, Source
from bouncekeeper.store.redis_store import Item
from tests.support.chromium import Chromium
from tests.support.dovecot import free_port
from tests.support.dsn import postfix_dsn
from tests.support.redis_server import RedisServer

TOKEN = "test-token-0123456789abcdef"
KEYRING = verp.Keyring.from_secrets([b"0123456789abcdef0123456789abcdef"])
DOMAIN = "bounce.example.net"
PREFIX = "bk:"
T0 = 1_763_769_600.0


class Api:
    """A client for the server under test."""

    def __init__(self, port: int, server: httpserver.BoundedServer | None = None) -> None:
        self.port = port
        self.server = server

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        raw = json.dumps(body) if body is not None and not isinstance(body, str | bytes) else body
        status, _headers, data = self.request(method, path, raw, **kwargs)
        return status, json.loads(data)


@pytest.fixture
def service(redis_db: RedisServer) -> Iterator[Service]:
    settings = config.Settings(
        verp=config.VerpSettings(bounce_domain=DOMAIN),
        redis=RedisSettings(url=redis_db.url, prefix=PREFIX),
        policy=config.ScoringSettings(mode="enforce", hard_threshold=1, breaker_addresses=0),
    )
    s = Service(settings, Store.from_settings(settings.redis), keyring=KEYRING)
    yield s
    s.close()


@pytest.fixture
def store(service: Service) -> Store:
    return service.store


@pytest.fixture
def serve_api(service: Service) -> Iterator[Callable[..., Api]]:
    """Start the API on the real store with these [http] settings (max_body 4096 and page_size 2 unless
    given)."""
    servers = []

    def start(**settings: Any) -> Api:
        http = config.HttpSettings(**{"max_body": 4096, "page_size": 2, **settings})
        server = httpd.make_server(App(ServiceBackend(service), TOKEN.encode(), http), "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append(server)
        return Api(server.server_address[1], server)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def api(serve_api: Callable[..., Api]) -> Api:
    return serve_api()


def disable_by_bounces(store: Store, address: str, reason: str = "userunknown") -> None:
    rules = Rules(mode=Mode.ENFORCE, breaker_addresses=0, hard_threshold=1)
    event = Event(
        at=T0, kind=EventKind.PERMANENT, source=Source.CLI, address=address, id=f"x-{address}",
        status="5.1.1", reason=reason,
    )  # fmt: skip
    (result,) = store.record([Item(address, Effect.HARD, event)], now=T0, rules=rules)
    assert result.state is State.DISABLED_BOUNCES


def keys(store: Store) -> list[str]:
    return sorted(store.client.keys("*"))


# --- authentication and bad input --------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef", ""])
def test_bad_or_missing_token_is_401_and_changes_nothing(api: Api, store: Store, token: str | None) -> None:
    headers = {"Authorization": "Bearer " + token} if token == "" else None
    status, body = api.json("POST", "/addresses/x@example.org/disable", {}, token=token, headers=headers)
    assert status == 401
    assert body["error"] == "unauthorized"
    assert keys(store) == []
    status, head, _ = api.request("GET", "/suppressions", token=token)
    assert status == 401
    assert head["www-authenticate"].startswith("Bearer")


def test_malformed_json_is_400_and_changes_nothing(api: Api, store: Store) -> None:
    status, body = api.json("POST", "/addresses/x@example.org/disable", "{not json")
    assert status == 400
    assert body["error"] == "bad_json"
    assert "not valid JSON" in body["message"]
    status, body = api.json("POST", "/addresses/x@example.org/disable", "[1, 2]")
    assert (status, body["error"]) == (400, "bad_json")
    assert keys(store) == []


def test_oversized_body_is_413_before_it_is_read(api: Api, store: Store) -> None:
    status, head, data = api.request("POST", "/bounces", b"x" * 5000)
    assert status == 413
    assert json.loads(data)["error"] == "too_large"
    assert "limit is 4096" in json.loads(data)["message"]
    assert head.get("connection") == "close"
    assert keys(store) == []


def test_unknown_and_malformed_addresses(api: Api, store: Store) -> None:
    status, body = api.json("GET", "/addresses/nobody@example.org")
    assert (status, body["error"]) == (404, "unknown_address")
    status, body = api.json("POST", "/addresses/nobody@example.org/enable")
    assert (status, body["error"]) == (404, "unknown_address")
    status, body = api.json("GET", "/addresses/not-an-address")
    assert (status, body["error"]) == (400, "bad_address")
    assert keys(store) == []


def test_unknown_route_and_wrong_method(api: Api) -> None:
    status, body = api.json("GET", "/nope")
    assert (status, body["error"]) == (404, "not_found")
    status, head, _ = api.request("DELETE", "/suppressions")
    assert status == 405
    assert head["allow"] == "GET"


def test_smtp_failure_input_is_validated(api: Api, store: Store) -> None:
    for payload, error in [
        ({"address": "a@example.org", "code": 250}, "bad_code"),
        ({"address": "a@example.org", "code": "550"}, "bad_code"),
        ({"address": "a@example.org", "code": 550, "status": "5.1"}, "bad_status"),
        ({"address": "nope", "code": 550}, "bad_address"),
    ]:
        status, body = api.json("POST", "/smtp-failures", payload)
        assert (status, body["error"]) == (400, error), payload
    assert keys(store) == []


def vaddr(rcpt: str) -> str:
    return verp.encode(
        rcpt, keyring=KEYRING, bounce_domain=DOMAIN, day=int(time.time() // 86400), context="news"
    )


def test_post_bounce_classifies_and_records(api: Api, store: Store) -> None:
    raw = postfix_dsn("henry@example.org", to=vaddr("henry@example.org"))
    status, body = api.json("POST", "/bounces?rcpt=" + urllib.parse.quote(vaddr("henry@example.org")), raw)
    assert status == 200
    assert body["is_bounce"] is True
    assert body["summary"].startswith("bounce recorded rcpt=henry@example.org kind=permanent status=5.1.1")
    (decision,) = body["recorded"]
    assert decision["state"] == "disabled-bounces"
    assert store.is_suppressed("henry@example.org")
    status, view = api.json("GET", "/addresses/henry@example.org")
    assert view["events"][0]["context"] == "news"
    assert view["events"][0]["source"] == "http"
    # The same bounce posted again counts once; the envelope recipient may come as a header too.
    status, body = api.json("POST", "/bounces", raw, headers={"X-Envelope-To": vaddr("henry@example.org")})
    assert body["recorded"][0]["duplicate"] is True
    _s, _h, text = api.request("GET", "/metrics")
    assert 'bouncekeeper_bounces_total{source="http",kind="permanent",reason="userunknown"} ' in text.decode()


def test_post_bounce_with_a_forged_verp_address_scores_nothing(api: Api, store: Store) -> None:
    forged = vaddr("ivy@example.org").replace("news", "nows")
    raw = postfix_dsn("ivy@example.org", to=forged)
    status, body = api.json("POST", "/bounces?rcpt=" + urllib.parse.quote(forged), raw)
    assert (status, body["forged"]) == (200, True)
    assert not store.is_suppressed("ivy@example.org")


def test_empty_bounce_is_400(api: Api, store: Store) -> None:
    status, body = api.json("POST", "/bounces", b"")
    assert (status, body["error"]) == (400, "empty")
    assert keys(store) == []


def test_smtp_failure_is_recorded(api: Api, store: Store) -> None:
    payload = {"address": "jack@example.org", "code": 550, "status": "5.1.1", "text": "no such user"}
    status, body = api.json("POST", "/smtp-failures", payload)
    assert status == 200
    assert body["recorded"][0]["kind"] == "permanent"
    assert store.is_suppressed("jack@example.org")


def test_store_outage_is_503_with_retry_after(api: Api, redis_db: RedisServer) -> None:
    redis_db.stop()
    status, head, data = api.request("POST", "/bounces", postfix_dsn("k@example.org", to="x@example.org"))
    assert status == 503
    assert head["retry-after"] == "30"
    assert json.loads(data)["error"] == "store_unavailable"


# --- the API on real state ---------------------------------------------------------------------------


def test_disable_get_enable_round_trip(api: Api, store: Store) -> None:
    status, body = api.json("POST", "/addresses/Dave@Example.org/disable", {"note": "asked by dave"})
    assert status == 200
    assert body == {"address": "dave@example.org", "previous": "active", "state": "disabled-admin"}
    assert store.is_suppressed("dave@example.org")
    status, view = api.json("GET", "/addresses/dave@example.org")
    assert status == 200
    assert view["state"] == "disabled-admin"
    assert view["events"][0]["note"] == "asked by dave"
    status, body = api.json("POST", "/addresses/dave@example.org/enable")
    assert (status, body["state"], body["previous"]) == (200, "active", "disabled-admin")
    assert not store.is_suppressed("dave@example.org")
    # Both changes went to the application's outbox.
    types_ = [f["type"] for _, f in store.client.xrange(store.keys.outbox)]
    assert types_ == ["disabled", "enabled"]


def test_suppressions_are_paged_in_address_order(api: Api, store: Store) -> None:
    addresses = [f"u{i}@example.org" for i in range(5)]
    for a in addresses:
        disable_by_bounces(store, a)
    seen: list[str] = []
    path: str | None = "/suppressions?limit=2"
    pages = 0
    while path:
        status, body = api.json("GET", path)
        assert status == 200
        seen += [row["address"] for row in body["items"]]
        assert all(row["last_reason"] == "userunknown" for row in body["items"])
        path = body["next"]
        pages += 1
    assert seen == addresses
    assert pages == 3
    status, body = api.json("GET", "/suppressions?limit=0")
    assert (status, body["error"]) == (400, "bad_limit")


def test_openapi_describes_every_route(api: Api) -> None:
    status, spec = api.json("GET", "/openapi.json", token=None)
    assert status == 200
    assert spec["openapi"].startswith("3.")
    described = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    assert described == {(r.name, r.method) for r in httpd.ROUTES if r.auth == "bearer"}
    item = spec["paths"]["/addresses/{address}/enable"]["post"]
    assert [(p["name"], p["in"]) for p in item["parameters"]] == [("address", "path")]
    assert set(item["responses"]) == {"200", "400", "401", "413", "503"}


def test_every_api_route_has_an_openapi_operation_and_every_operation_a_route() -> None:
    handlers = [r.handler for r in http_api.ROUTES if r.auth == "bearer"]
    assert sorted(handlers) == sorted(http_api.OPERATIONS)
    # The admin page's routes are never the API's (they take the session cookie, not the token).
    assert all(r.auth != "bearer" for r in http_admin.ROUTES)


def test_metrics_in_prometheus_text_format(api: Api, store: Store) -> None:
    disable_by_bounces(store, "m@example.org")
    api.json("GET", "/addresses/m@example.org")
    status, head, data = api.request("GET", "/metrics")
    assert status == 200
    assert head["content-type"].startswith("text/plain; version=0.0.4")
    text = data.decode()
    assert 'bouncekeeper_http_requests_total{route="/addresses/{address}",code="200"}' in text
    assert 'bouncekeeper_outbox_depth{stream="outbox"} 1' in text
    assert "# TYPE bouncekeeper_store_seconds histogram" in text
    assert re.search(r'bouncekeeper_store_seconds_count\{operation="view"\} [1-9]', text)
    assert api.request("GET", "/metrics", token=None)[0] == 401
    # The notifier (another process) keeps its counts in Redis; /metrics reads them on each scrape.
    store.client.hincrby(store.keys.outbox_stats, "delivered:app/url", 3)
    text = api.request("GET", "/metrics")[2].decode()
    assert 'bouncekeeper_notifications_total{target="app/url",result="delivered"} 3' in text


def test_metrics_registry_renders_labels_escaped() -> None:
    registry = metrics.Registry()
    c = registry.counter("x_total", "help", ("a",))
    c.inc('q"uo\\te\n')
    assert 'x_total{a="q\\"uo\\\\te\\n"} 1' in registry.render()


# --- the admin page ----------------------------------------------------------------------------------


def session_cookie(api: Api) -> str:
    status, head, _ = api.request("POST", "/login", f"token={TOKEN}", token=None,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert status == 303
    return head["set-cookie"].split(";")[0]


def test_admin_form_refuses_missing_csrf_foreign_origin_and_no_session(api: Api, store: Store) -> None:
    disable_by_bounces(store, "e@example.org")
    cookie = session_cookie(api)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = api.request("POST", "/admin/enable", "address=e%40example.org", token=None,
                               headers={**form, "Cookie": cookie})  # fmt: skip
    assert status == 403
    page = api.request("GET", "/", token=None, headers={"Cookie": cookie})[2].decode()
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf is not None
    body = f"address=e%40example.org&csrf={csrf.group(1)}"
    evil = {**form, "Cookie": cookie, "Origin": "http://evil.example"}
    assert api.request("POST", "/admin/enable", body, token=None, headers=evil)[0] == 403
    assert api.request("POST", "/admin/enable", body, token=None, headers=form)[0] == 401
    # The bearer token does not stand in for the session on the form, nor the cookie for the token.
    assert api.request("POST", "/admin/enable", body, headers=form)[0] == 401
    assert api.request("GET", "/suppressions", token=None, headers={"Cookie": cookie})[0] == 401
    assert store.is_suppressed("e@example.org")
    # With all three, it works.
    assert (
        api.request("POST", "/admin/enable", body, token=None, headers={**form, "Cookie": cookie})[0] == 303
    )
    assert not store.is_suppressed("e@example.org")


def test_wrong_login_token_gets_the_form_again(api: Api) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, head, data = api.request("POST", "/login", "token=guess", token=None, headers=form)
    assert status == 401
    assert "set-cookie" not in head
    assert b"Wrong token" in data


def test_admin_page_re_enables_an_address_in_a_real_browser(api: Api, store: Store) -> None:
    disable_by_bounces(store, "frank@example.org", reason="userunknown")
    disable_by_bounces(store, "grace@example.org", reason="hostunknown")
    with tempfile.TemporaryDirectory(prefix="bk-chromium-") as profile:
        browser = Chromium(pathlib.Path(profile))
        try:
            browser.open(f"http://127.0.0.1:{api.port}/")
            assert "API token" in browser.text()
            browser.type_into("#token", TOKEN)
            browser.click("#login")
            text = browser.text()
            assert "frank@example.org" in text
            assert "userunknown" in text
            assert "hostunknown" in text
            browser.click('tr[data-address="frank@example.org"] button')
            assert browser.evaluate("document.getElementById('notice').innerText") == (
                "frank@example.org was re-enabled."
            )
            rows = browser.evaluate(
                "[...document.querySelectorAll('tr[data-address]')].map(r => r.dataset.address)"
            )
            assert rows == ["grace@example.org"]
            browser.click("#logout")  # the form carries its CSRF token; the session ends on the server
            assert "API token" in browser.text()
            browser.open(f"http://127.0.0.1:{api.port}/")
            assert "API token" in browser.text()
        finally:
            browser.close()
    assert not store.is_suppressed("frank@example.org")
    assert store.is_suppressed("grace@example.org")
    (event,) = [e for e in store.view("frank@example.org").events if e["kind"] == "enabled"]
    assert event["source"] == "http"


def test_next_page_link_on_the_admin_page(api: Api, store: Store) -> None:
    for i in range(3):
        disable_by_bounces(store, f"p{i}@example.org")
    cookie = session_cookie(api)
    page = api.request("GET", "/", token=None, headers={"Cookie": cookie})[2].decode()
    assert "p0@example.org" in page
    assert "p2@example.org" not in page  # page_size 2
    assert 'href="/?after=p1%40example.org"' in page
    page = api.request("GET", "/?after=p1%40example.org", token=None, headers={"Cookie": cookie})[2].decode()
    assert "p2@example.org" in page


def test_http_command_serves_until_sigterm(tmp_path: pathlib.Path, redis_db: RedisServer) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    conf = tmp_path / "bk.toml"
    conf.write_text(
        f'[redis]\nurl = "{redis_db.url}"\n[http]\ntoken_file = "{token}"\nlisten = "127.0.0.1:{port}"\n'
        '[log]\nlevel = "WARNING"\n'
    )
    assert cli.main(["--config", str(conf), "config", "check"]) == 0
    root = pathlib.Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bouncekeeper.cli", "--config", str(conf), "http"],
        env={**os.environ, "PYTHONPATH": str(root / "milter")},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                status, _ = Api(port).json("GET", "/suppressions")
                break
            except OSError:
                assert time.monotonic() < deadline
                assert proc.poll() is None
                time.sleep(0.05)
        assert status == 200
        assert Api(port).request("GET", "/suppressions", token="nope")[0] == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_http_command_refuses_to_start_without_a_token(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "bk.toml"
    conf.write_text("[http]\nlisten = '127.0.0.1:1'\n")
    assert cli.main(["--config", str(conf), "http"]) == 78


# --- hostile clients (issue 14): each attack against the real server, and the bound it meets -----------


def talk(port: int, data: bytes, *, slowly: bytes = b"", wait: float = 5.0) -> tuple[bytes, bool]:
    """Send `data`, then `slowly` a byte every 0.05 s, then read until the server closes or `wait`
    seconds pass in silence. Returns what came back and whether the server closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    received = b""
    try:
        try:
            sock.sendall(data)
            for i in range(len(slowly)):
                time.sleep(0.05)
                sock.sendall(slowly[i : i + 1])
        except OSError:
            pass  # the server cut us off while we were still sending: read what it said
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received, False
            except ConnectionResetError:
                return received, True
            if not chunk:
                return received, True
            received += chunk
    finally:
        sock.close()


def statuses(received: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"^HTTP/1\.[01] (\d{3}) ", received, re.M) if m != b"100"]


def cuts(limit: str, listener: str = "http") -> float:
    return metrics.LIMITED.value(listener, limit)


def request_bytes(method: str, path: str, *headers: str, body: bytes = b"", token: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if token:
        lines.append(f"Authorization: Bearer {TOKEN}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [("POST", "/bounces", False, 401), ("POST", "/nope", True, 404), ("PUT", "/suppressions", True, 405)],
)
def test_an_early_answer_does_not_read_the_body_and_closes(
    api: Api, store: Store, method: str, path: str, token: bool, status: int
) -> None:
    # Headers announce 4,000 bytes (within max_body) and none follow: an answer that waited for the
    # body (as one that reads it) never comes; this one comes at once, then the connection closes.
    head = request_bytes(method, path, "Content-Length: 4000", "Expect: 100-continue", token=token)
    received, closed = talk(api.port, head)
    assert statuses(received) == [status]
    assert b"100 Continue" not in received  # a refused request never invites its body
    assert b"\r\nConnection: close\r\n" in received
    assert closed
    assert keys(store) == []


def test_an_unread_body_is_never_taken_for_the_next_request(api: Api) -> None:
    # The body of a refused (or of a GET) request holds a second request: it must not be answered.
    smuggled = request_bytes("GET", "/suppressions")
    for head in (
        request_bytes("POST", "/bounces", f"Content-Length: {len(smuggled)}", token=False),
        request_bytes("GET", "/suppressions", f"Content-Length: {len(smuggled)}"),
        request_bytes("POST", "/bounces", "Transfer-Encoding: chunked")
        + f"{len(smuggled):x}\r\n".encode(),  # the chunk is the smuggled request
    ):
        received, closed = talk(api.port, head + smuggled)
        assert len(statuses(received)) == 1, received
        assert statuses(received)[0] in (401, 200, 411)
        assert closed


def test_chunked_encoding_gets_411_and_the_connection_closes(api: Api) -> None:
    received, closed = talk(
        api.port, request_bytes("POST", "/bounces", "Transfer-Encoding: chunked") + b"0\r\n\r\n"
    )
    assert statuses(received) == [411]
    assert b'"length_required"' in received
    assert closed


def test_an_authenticated_body_is_invited_and_read(api: Api) -> None:
    body = json.dumps({"address": "kim@example.org", "code": 550, "status": "5.1.1"}).encode()
    head = request_bytes("POST", "/smtp-failures", f"Content-Length: {len(body)}", "Expect: 100-continue")
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    try:
        sock.sendall(head)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        answer = sock.recv(65536)
    finally:
        sock.close()
    assert statuses(answer) == [200]
    assert b"\r\nConnection: close\r\n" not in answer  # all read: the connection may be kept


@pytest.mark.parametrize(
    ("header", "value"),
    [("Content-Length", b"\xb2"), ("Content-Length", b"\xc2\xb2"), ("Content-Length", b"-1"),
     ("Content-Length", b"1e3"), ("Content-Length", b"9" * 40)],
)  # fmt: skip
def test_a_malformed_content_length_is_400(api: Api, store: Store, header: str, value: bytes) -> None:
    head = request_bytes("POST", "/bounces").replace(
        b"\r\n\r\n", b"\r\n" + header.encode() + b": " + value + b"\r\n\r\n"
    )
    received, closed = talk(api.port, head)
    assert statuses(received) == [400], received
    assert closed
    assert keys(store) == []


def test_two_different_content_lengths_are_400(api: Api) -> None:
    head = request_bytes("POST", "/smtp-failures", "Content-Length: 2", "Content-Length: 40")
    received, closed = talk(api.port, head + b"{}")
    assert statuses(received) == [400]
    assert closed


def test_deep_json_and_huge_integers_are_400(serve_api: Callable[..., Api], store: Store) -> None:
    api = serve_api(max_body=64 * 1024)
    for body, expected in [
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ('{"address": "a@example.org", "code": ' + "5" * 5000 + "}", "at most 20"),
        ('{"address": "a@example.org", "code": NaN}', "NaN is not JSON"),
    ]:
        status, answer = api.json("POST", "/smtp-failures", body)
        assert (status, answer["error"]) == (400, "bad_json"), answer
        assert expected in answer["message"]
    assert keys(store) == []


@pytest.mark.parametrize(
    "cookie",
    [b"bk_session=\xb2.\xe9", b"bk_session=99999999999.\xe9\xe9", b"bk_session=" + b"A" * 43, b"bk_session"],
)
def test_a_malformed_or_unknown_session_cookie_gets_the_login_form(api: Api, cookie: bytes) -> None:
    head = request_bytes("GET", "/", token=False).replace(b"\r\n\r\n", b"\r\nCookie: " + cookie + b"\r\n\r\n")
    received, _ = talk(api.port, head, wait=1)
    assert statuses(received) == [200]
    assert b"API token" in received


def test_a_non_ascii_csrf_token_is_403(api: Api, store: Store) -> None:
    disable_by_bounces(store, "nina@example.org")
    cookie = session_cookie(api)
    body = b"address=nina%40example.org&csrf=%C3%A9%C2%B2"
    head = request_bytes(
        "POST", "/admin/enable", f"Cookie: {cookie}", "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}", token=False,
    )  # fmt: skip
    received, _ = talk(api.port, head + body, wait=1)
    assert statuses(received) == [403]
    assert store.is_suppressed("nina@example.org")


def test_an_unknown_method_is_405_or_404_never_5xx(api: Api) -> None:
    assert statuses(talk(api.port, request_bytes("BREW", "/suppressions"), wait=1)[0]) == [405]
    assert statuses(talk(api.port, request_bytes("BREW", "/coffee"), wait=1)[0]) == [404]


def test_oversized_headers_are_431_and_the_connection_closes(api: Api) -> None:
    before = cuts("header-size")
    head = request_bytes("GET", "/suppressions", *(f"X-Pad-{i}: {'x' * 1000}" for i in range(50)))
    received, closed = talk(api.port, head)
    assert statuses(received) == [431]
    assert closed
    assert cuts("header-size") == before + 1


def test_no_version_in_the_server_header(api: Api) -> None:
    for method, path in [("GET", "/suppressions"), ("GET", "/nope"), ("GET", "/")]:
        _status, head, _ = api.request(method, path)
        assert head["server"] == "bouncekeeper"
    for line in (b"NOT HTTP AT ALL", b"GET / HTTP/1.x"):  # the stdlib's own error page
        received, closed = talk(api.port, line + b"\r\n\r\n")
        assert (statuses(received), closed) == ([400], True)
    assert b"\r\nServer: bouncekeeper\r\n" in received
    assert b"Python" not in received
    # Nor in the description anyone may read.
    status, _head, data = api.request("GET", "/openapi.json", token=None)
    assert status == 200
    assert json.loads(data)["info"]["version"] == http_api.API_VERSION
    assert bouncekeeper.__version__.encode() not in data


# --- slow, idle and too many clients ---------------------------------------------------------------------

QUICK = {"idle_timeout": 0.5, "header_timeout": 0.5, "request_timeout": 1.0}


def test_slow_headers_are_cut_at_the_header_deadline(serve_api: Callable[..., Api]) -> None:
    api = serve_api(**QUICK)
    before = cuts("header-time")
    # 200 header bytes, one every 0.05 s (10 s in all): each read is quick, the whole is too slow.
    received, closed = talk(api.port, b"GET /suppressions HTTP/1.1\r\n", slowly=b"X-Slow: " + b"x" * 200)
    assert statuses(received) == [408]
    assert closed
    assert cuts("header-time") == before + 1


def test_a_slow_body_is_cut_at_the_request_deadline(serve_api: Callable[..., Api], store: Store) -> None:
    api = serve_api(**QUICK)
    before = cuts("request-time")
    head = request_bytes("POST", "/smtp-failures", "Content-Length: 200")
    received, closed = talk(api.port, head, slowly=b" " * 200)
    assert statuses(received) == [408]
    assert closed
    assert cuts("request-time") == before + 1
    assert keys(store) == []


def test_an_idle_connection_is_closed_without_a_word(serve_api: Callable[..., Api]) -> None:
    api = serve_api(**QUICK)
    before = cuts("idle")
    assert talk(api.port, b"") == (b"", True)
    # Also after a first request (keep-alive): answered, then closed when the next does not come.
    received, closed = talk(api.port, request_bytes("GET", "/suppressions"))
    assert (statuses(received), closed) == ([200], True)
    assert cuts("idle") >= before + 2  # (>=: another test's server may close an idle one meanwhile)


def request_threads(port: int) -> int:
    """Threads serving a connection of the server on this port (httpserver names them)."""
    return sum(1 for t in threading.enumerate() if t.name.endswith(f":{port}") and t.name.startswith("bk-"))


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True  # nothing to read, and no end of file
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def test_idle_and_slow_connections_cannot_lock_out_an_authenticated_client(
    serve_api: Callable[..., Api],
) -> None:
    api = serve_api(max_connections=8)  # deadlines at their defaults: only the cap protects
    before = cuts("evicted")
    idle = [socket.create_connection(("127.0.0.1", api.port), timeout=5) for _ in range(12)]
    slow = []
    for _ in range(12):
        sock = socket.create_connection(("127.0.0.1", api.port), timeout=5)
        sock.sendall(b"GET /suppressions HTTP/1.1\r\nX-Slow: ")  # headers that never end
        slow.append(sock)
    try:
        for _ in range(3):
            assert api.json("GET", "/suppressions")[0] == 200
        # The slow ones had a thread each, 8 at most, the oldest closed to make room; the idle ones
        # never had one (they wait in the room for their first byte) and are still open.
        assert wait_for(lambda: request_threads(api.port) <= 8), request_threads(api.port)
        assert cuts("evicted") >= before + 12 - 8
        assert all(still_open(sock) for sock in idle)
        assert sum(still_open(sock) for sock in slow) <= 8
    finally:
        for sock in idle + slow:
            sock.close()


def test_an_unauthenticated_answer_closes_the_connection(api: Api) -> None:
    # A kept-alive connection holds a thread while it idles: only an authenticated client keeps one.
    received, closed = talk(api.port, request_bytes("GET", "/suppressions", token=False), wait=2)
    assert (statuses(received), closed) == ([401], True)
    received, closed = talk(api.port, request_bytes("GET", "/suppressions"), wait=2)
    assert (statuses(received), closed) == ([200], False)  # still open when the client gave up


def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(serve_api: Callable[..., Api]) -> None:
    api = serve_api(max_connections=2)
    busy = []
    for _ in range(2):  # authenticated bodies being read: accepted requests, never evicted
        sock = socket.create_connection(("127.0.0.1", api.port), timeout=5)
        sock.sendall(request_bytes("POST", "/smtp-failures", "Content-Length: 100") + b"{")
        busy.append(sock)
    assert api.server is not None
    server = api.server
    try:
        assert wait_for(lambda: server.phases() == [httpserver.Phase.ACTIVE] * 2)
        before = cuts("connections")
        received, closed = talk(api.port, request_bytes("GET", "/suppressions"))
        assert statuses(received) == [503]
        assert closed
        assert cuts("connections") == before + 1
    finally:
        for sock in busy:
            sock.close()


# --- sessions and logins -----------------------------------------------------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def csrf_of(api: Api, cookie: str) -> str:
    page = api.request("GET", "/", token=None, headers={"Cookie": cookie})[2].decode()
    found = re.search(r'action="/logout"><input type="hidden" name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, page
    return found.group(1)


def test_logout_ends_the_session_on_the_server(api: Api, store: Store) -> None:
    disable_by_bounces(store, "olga@example.org")
    cookie = session_cookie(api)
    csrf = csrf_of(api, cookie)
    status, head, _ = api.request(
        "POST", "/logout", f"csrf={csrf}", token=None, headers={**FORM, "Cookie": cookie}
    )
    assert status == 303
    assert "Max-Age=0" in head["set-cookie"]
    # The browser was told to forget the cookie; one kept (stolen) no longer works either.
    assert b"API token" in api.request("GET", "/", token=None, headers={"Cookie": cookie})[2]
    body = f"address=olga%40example.org&csrf={csrf_token_for(cookie)}"
    assert (
        api.request("POST", "/admin/enable", body, token=None, headers={**FORM, "Cookie": cookie})[0] == 401
    )
    assert store.is_suppressed("olga@example.org")
    assert not [k for k in keys(store) if ":session:" in k]


def csrf_token_for(cookie: str) -> str:
    return http_admin.csrf_token(TOKEN.encode(), cookie.partition("=")[2])


def test_a_cross_origin_or_csrf_less_logout_is_refused(api: Api) -> None:
    cookie = session_cookie(api)
    csrf = csrf_of(api, cookie)
    evil = {**FORM, "Cookie": cookie, "Origin": "http://evil.example"}
    assert api.request("POST", "/logout", f"csrf={csrf}", token=None, headers=evil)[0] == 403
    assert api.request("POST", "/logout", "", token=None, headers={**FORM, "Cookie": cookie})[0] == 403
    assert b"Disabled addresses" in api.request("GET", "/", token=None, headers={"Cookie": cookie})[2]


def test_the_session_is_kept_in_redis_by_digest_and_ends_with_its_ttl(api: Api, store: Store) -> None:
    cookie = session_cookie(api)
    value = cookie.partition("=")[2]
    (key,) = [k for k in keys(store) if ":session:" in k]
    assert value not in key  # a copy of the database does not hold a live cookie
    assert 0 < store.client.ttl(key) <= http_admin.SESSION_SECONDS
    store.client.delete(key)  # as its TTL would
    assert b"API token" in api.request("GET", "/", token=None, headers={"Cookie": cookie})[2]


@pytest.mark.parametrize("secure", [False, True])
def test_the_cookie_is_secure_when_configured(serve_api: Callable[..., Api], secure: bool) -> None:
    api = serve_api(secure_cookie=secure)
    status, head, _ = api.request("POST", "/login", f"token={TOKEN}", token=None, headers=FORM)
    assert status == 303
    attributes = [a.strip() for a in head["set-cookie"].split(";")]
    assert ("Secure" in attributes) is secure
    assert {"HttpOnly", "SameSite=Strict"} <= set(attributes)


def test_failed_logins_are_logged_and_throttled_per_client(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(http_admin.LOGIN_FAILURES):
        assert api.request("POST", "/login", "token=guess", token=None, headers=FORM)[0] == 401
    assert (
        sum("failed admin login from 127.0.0.1" in r.getMessage() for r in caplog.records)
        == http_admin.LOGIN_FAILURES
    )
    # Locked out for the window, even with the right token (or a guess would be confirmed).
    status, head, data = api.request("POST", "/login", f"token={TOKEN}", token=None, headers=FORM)
    assert status == 429
    assert 0 < int(head["retry-after"]) <= http_admin.LOGIN_WINDOW
    assert json.loads(data)["error"] == "throttled"
    assert metrics.HTTP_AUTH_FAILURES.value("throttled") >= 1


# --- the daemons' /metrics endpoint is bounded the same way ------------------------------------------------


def test_the_metrics_endpoint_bounds_idle_connections_and_names_no_version() -> None:
    server = metrics.serve("127.0.0.1:0")
    port = server.server_address[1]
    room = httpserver.ROOM_PER_THREAD * httpserver.METRICS_LIMITS.max_connections
    before = cuts("evicted", "metrics")
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(room + 20)]
    try:
        received, _ = talk(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert statuses(received) == [200]
        assert b"\r\nServer: bouncekeeper\r\n" in received
        assert wait_for(lambda: cuts("evicted", "metrics") >= before + 20)  # the room's oldest closed
        assert request_threads(port) <= 1  # idle ones hold no thread
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()
