"""The policy service against clients that are not Postfix and SMTP clients guessing tags (docs/hostile.md):
a real server on a real socket; bounds asserted as counts, never times."""

from __future__ import annotations

import pathlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bouncekeeper.core import throttle
from bouncekeeper.daemons import metrics, milterd, policyd
from tests.daemons.test_policyd import FILTER, _request, _settings
from tests.support.milter_harness import BOUNCE_DOMAIN, Verp, forge


def limited(limit: str) -> float:
    return metrics.LIMITED.value("policy", limit)


class Client:
    def __init__(self, path: pathlib.Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        for _ in range(500):
            try:
                self.sock.connect(str(path))
                break
            except BlockingIOError:  # a unix socket's backlog is full until the server accepts
                time.sleep(0.01)
        self.reader = self.sock.makefile("rb")

    def ask(self, request: dict[str, str]) -> bytes:
        self.send(b"".join(f"{k}={v}\n".encode() for k, v in request.items()) + b"\n")
        return self.reader.readline() + self.reader.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed(self) -> bool:
        return self.reader.read(1) == b""

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class Running:
    def __init__(self, tmp_path: pathlib.Path, mode: str = "enforce", **limits: float) -> None:
        settings = _settings(tmp_path, mode)
        self.verp = Verp(settings)
        self.path = tmp_path / "policy.sock"
        self.server = policyd.PolicyServer(
            f"unix:{self.path}",
            milterd.recipient_routing(settings),
            limits=policyd.ConnectionLimits(**limits),  # type: ignore[arg-type]
        )
        self.server.start(self.verp.check)
        self.clients: list[Client] = []

    def connect(self) -> Client:
        client = Client(self.path)
        self.clients.append(client)
        return client

    def forged(self, rcpt: str) -> str:
        return forge(self.verp.address(rcpt))

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.server.stop()


@pytest.fixture
def running(tmp_path: pathlib.Path) -> Iterator[Running]:
    r = Running(tmp_path)
    yield r
    r.stop()


def _closing(reply: bytes) -> bool:
    return reply.startswith(b"action=421 4.7.0 ")


def test_three_forged_addresses_about_one_client_get_421(running: Running) -> None:
    before = limited("forged-session")
    client = running.connect()
    replies = [client.ask(_request(running.forged(f"g{n}@example.net"))) for n in range(3)]
    assert [r.startswith(b"action=550 5.7.1 ") for r in replies] == [True, True, False]
    assert _closing(replies[2])
    assert limited("forged-session") - before == 1
    # Postfix now disconnects that client; its next client on this connection starts afresh.
    other = _request(running.forged("h@example.net"), client_address="198.51.100.9")
    assert client.ask(other).startswith(b"action=550 5.7.1 ")


def test_a_client_that_keeps_guessing_gets_the_same_answer_for_a_valid_address(running: Running) -> None:
    before = limited("forged-client")
    valid = running.verp.address("alice@example.net")
    for n in range(throttle.PER_CLIENT):  # one guess per connection (per smtpd process)
        reply = running.connect().ask(_request(running.forged(f"g{n}@example.net")))
    assert _closing(reply)
    client = running.connect()
    assert _closing(client.ask(_request(valid)))
    assert limited("forged-client") - before == 2
    assert (
        client.ask(_request(valid, client_address="198.51.100.7")) == f"action=FILTER {FILTER}\n\n".encode()
    )
    assert client.ask(_request("someone@example.org")) == b"action=DUNNO\n\n"  # not a bounce address


@pytest.mark.parametrize(
    "local",
    [b"\xff\xfe", b"al\x00ice", b"ali\x1bce", "\u202ealice".encode()],
    ids=["not-utf8", "nul", "esc", "rlo"],
)
def test_a_bounce_recipient_with_bad_bytes_is_550_5_1_3(running: Running, local: bytes) -> None:
    before = limited("bad-address")
    rejected = metrics.DECISIONS.value("policy", "reject")
    client = running.connect()
    client.send(b"request=smtpd_access_policy\nclient_address=192.0.2.25\nrecipient=" + local)
    client.send(b"@" + BOUNCE_DOMAIN.encode() + b"\n\n")
    assert (
        client.reader.readline() + client.reader.readline()
        == b"action=550 5.1.3 Bad recipient address syntax\n\n"
    )
    assert limited("bad-address") - before == 1
    assert metrics.DECISIONS.value("policy", "reject") - rejected == 1  # counted once, as every listener


def test_connections_over_the_cap_are_closed_at_once(tmp_path: pathlib.Path) -> None:
    r = Running(tmp_path, max_connections=3)
    try:
        before = limited("connections")
        held = [r.connect() for _ in range(3)]
        assert all(c.ask(_request("someone@example.org")) == b"action=DUNNO\n\n" for c in held)
        assert r.connect().closed()
        assert limited("connections") - before == 1
        held[0].close()
        deadline = time.monotonic() + 10
        while len(r.server._open) > 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.connect().ask(_request("someone@example.org")) == b"action=DUNNO\n\n"
    finally:
        r.stop()


def test_three_hundred_idle_connections_are_closed_and_their_threads_end(tmp_path: pathlib.Path) -> None:
    """The issue's attack: 300 idle connections held 308 threads."""
    baseline = threading.active_count()
    r = Running(tmp_path, idle_timeout=0.5)
    try:
        before = limited("idle")
        clients = [r.connect() for _ in range(300)]
        assert all(c.closed() for c in clients)  # each read returns once the server closed it
        assert limited("idle") - before == 300
        deadline = time.monotonic() + 10
        while threading.active_count() > baseline + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= baseline + 2  # the server's and the reaper's
    finally:
        r.stop()


def test_a_busy_connection_is_closed_at_its_deadline(tmp_path: pathlib.Path) -> None:
    r = Running(tmp_path, session_timeout=0.5)
    try:
        before = limited("session")
        client = r.connect()
        replies = []
        for _ in range(200):  # never idle: a request every 50 ms, for 10 s at most
            try:
                replies.append(client.ask(_request("someone@example.org")))
            except OSError:  # the server shut the connection down while we were sending
                replies.append(b"")
            if not replies[-1]:
                break
            time.sleep(0.05)
        assert replies[-1] == b""
        assert replies[0] == b"action=DUNNO\n\n"
        assert limited("session") - before == 1
    finally:
        r.stop()


def test_a_request_over_the_size_limit_closes_the_connection(running: Running) -> None:
    before = limited("request-size")
    client = running.connect()
    client.send(b"recipient=" + b"x" * (policyd.MAX_REQUEST + 10) + b"\n")
    assert client.closed()
    assert limited("request-size") - before == 1
