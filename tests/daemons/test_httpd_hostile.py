"""Hostile clients against the real HTTP server: each attack, and the bound it meets."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable

import pytest

import bouncekeeper
from bouncekeeper.daemons import http_api, http_connection, httpserver, metrics
from bouncekeeper.store import Store
from tests.daemons import test_httpd as site
from tests.daemons.test_httpd import Api, api, serve_api, service, store

__all__ = ["api", "serve_api", "service", "store"]  # the fixtures, shared with test_httpd

# --- hostile clients (docs/hostile.md): each attack against the real server, and the bound it meets -----


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
        lines.append(f"Authorization: Bearer {site.TOKEN}")
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
    assert site.keys(store) == []


def test_an_unread_body_is_never_taken_for_the_next_request(api: Api) -> None:
    # The body of a refused (or of a GET) request holds a second request: it must not be answered.
    smuggled = request_bytes("GET", "/suppressions")
    for head, status in (
        (request_bytes("POST", "/bounces", f"Content-Length: {len(smuggled)}", token=False), 401),
        (request_bytes("GET", "/suppressions", f"Content-Length: {len(smuggled)}"), 200),
        (
            request_bytes("POST", "/bounces", "Transfer-Encoding: chunked")
            + f"{len(smuggled):x}\r\n".encode(),  # the chunk is the smuggled request
            411,
        ),
    ):
        received, closed = talk(api.port, head + smuggled)
        assert len(statuses(received)) == 1, received
        assert statuses(received)[0] == status, received  # each its own answer, not any of the three
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
    assert site.keys(store) == []


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
    assert site.keys(store) == []


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
    site.disable_by_bounces(store, "nina@example.org")
    cookie = site.session_cookie(api)
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
    assert site.keys(store) == []


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
        assert wait_for(lambda: server.phases() == [http_connection.Phase.ACTIVE] * 2)
        before = cuts("connections")
        received, closed = talk(api.port, request_bytes("GET", "/suppressions"))
        assert statuses(received) == [503]
        assert closed
        assert cuts("connections") == before + 1
    finally:
        for sock in busy:
            sock.close()


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
