"""The HTTP API and admin page over a real server on 127.0.0.1, with the real store in a real Redis."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

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
from bouncekeeper.store.model import Item
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
    return sorted(store._client.keys("*"))


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


def test_store_outage_is_503_with_retry_after_on_every_route_that_needs_the_store(
    api: Api, redis_db: RedisServer
) -> None:
    cookie = {"Cookie": session_cookie(api)}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    redis_db.stop()
    bearer: list[tuple[str, str, bytes | str | None]] = [
        ("POST", "/bounces", postfix_dsn("k@example.org", to="x@example.org")),
        ("POST", "/smtp-failures", json.dumps({"address": "k@example.org", "code": 550})),
        ("GET", "/suppressions", None),
        ("GET", "/addresses/k@example.org", None),
        ("POST", "/addresses/k@example.org/enable", None),
        ("POST", "/addresses/k@example.org/disable", None),
    ]
    admin: list[tuple[str, str, str | None, dict[str, str]]] = [
        ("GET", "/", None, cookie),
        ("GET", "/charts", None, cookie),
        ("POST", "/login", f"token={TOKEN}", form),
    ]
    errors = metrics.STORE_ERRORS.value("process_bounce")
    answers = [(m, p, api.request(m, p, body)) for m, p, body in bearer]
    assert metrics.STORE_ERRORS.value("process_bounce") - errors == 1  # the outage, counted by operation
    answers += [(m, p, api.request(m, p, body, token=None, headers=h)) for m, p, body, h in admin]
    for method, path, (status, head, data) in answers:
        # The store's StoreUnavailable, never a Redis error of its own (a 500).
        assert (status, head.get("retry-after")) == (503, "30"), (method, path, data)
        assert json.loads(data)["error"] == "store_unavailable"
    # /metrics still serves what this process counted.
    assert api.request("GET", "/metrics")[0] == 200


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
    types_ = [f["type"] for _, f in store._client.xrange(store.keys.outbox)]
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


def test_the_admin_page_and_the_api_share_no_path() -> None:
    # httpd joins the two route tables: a path in both would be served by whichever comes first.
    for ours, theirs in [(http_admin.ROUTES, http_api.ROUTES), (http_api.ROUTES, http_admin.ROUTES)]:
        for route in ours:
            assert not [r.name for r in theirs if r.pattern.match(route.name)], route.name


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
    store._client.hincrby(store.keys.outbox_stats, "delivered:app/url", 3)
    text = api.request("GET", "/metrics")[2].decode()
    assert 'bouncekeeper_notifications_total{target="app/url",result="delivered"} 3' in text


def test_metrics_registry_renders_labels_escaped() -> None:
    registry = metrics.Registry()
    c = registry.counter("x_total", "help", ("a",))
    c.inc('q"uo\\te\n')
    assert 'x_total{a="q\\"uo\\\\te\\n"} 1' in registry.render()


# --- shared with the admin page's tests ------------------------------------------------------------------


def session_cookie(api: Api) -> str:
    status, head, _ = api.request("POST", "/login", f"token={TOKEN}", token=None,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert status == 303
    return head["set-cookie"].split(";")[0]


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
