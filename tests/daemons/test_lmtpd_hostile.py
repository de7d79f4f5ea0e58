"""The LMTP listener against hostile clients (docs/hostile.md): each attack run against the real listener
writing to a real Redis, and its bound asserted (counts and sizes, never times)."""

from __future__ import annotations

import contextlib
import logging
import pathlib
import smtplib
import socket
import time
from collections.abc import Iterator

import pytest

from bouncekeeper import log
from bouncekeeper.core import throttle
from bouncekeeper.core.limits import MAX_RECIPIENTS
from bouncekeeper.daemons import metrics
from tests.daemons.test_lmtpd import PERMANENT, Harness, deliver, harness, vaddr
from tests.support import hostile_mail
from tests.support.exim import free_port
from tests.support.lmtp import BOUNCE_DOMAIN, ListenerProcess, settings_for
from tests.support.milter_harness import forge
from tests.support.redis_server import RedisServer
from tests.support.triage_spy import count_triages

__all__ = ["harness"]  # the fixture, shared with test_lmtpd


def limited(limit: str) -> float:
    return metrics.LIMITED.value("lmtp", limit)


@pytest.fixture
def triages(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    return count_triages(monkeypatch)


class Wire:
    """A raw client: what smtplib refuses to send (bytes that are not UTF-8, overlong lines)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> bytes:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed")
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def send(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        """Whether the server closed the connection (a read returns nothing)."""
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextlib.contextmanager
def connected(harness: Harness, *, mode: str = "observe", lmtp: str = "") -> Iterator[Wire]:
    """A listener started with `start`, and a raw TCP client of it."""
    address = harness.start(mode=mode, lmtp=lmtp).lmtp_address
    assert isinstance(address, tuple)
    wire = Wire(address)
    try:
        yield wire
    finally:
        wire.close()


def start_transaction(wire: Wire) -> None:
    assert wire.send(b"LHLO mta.example.test").startswith(b"250")
    assert wire.send(b"MAIL FROM:<>").startswith(b"250")


def test_two_thousand_identical_recipients_are_capped_and_classified_once(
    harness: Harness, triages: list[bytes]
) -> None:
    listener = harness.start(lmtp="max_recipients = 100")
    alice = vaddr("alice@example.org")
    before = limited("recipients")
    rcpt, data = deliver(listener.lmtp_address, [alice] * 2000, PERMANENT)
    codes = [code for code, _ in rcpt]
    assert codes[:100] == [250] * 100
    assert set(codes[100:]) == {452}
    assert all(msg.startswith(b"4.5.3") for _, msg in rcpt[100:])
    assert limited("recipients") - before == 1900
    # RFC 2033: one reply per accepted RCPT, all from the one result.
    assert [code for code, _ in data] == [250] * 100
    assert len(triages) == 1
    view = listener.service.store.view("alice@example.org")
    assert len(view.events) == 1


def test_a_client_that_goes_on_after_the_452s_is_cut_off(harness: Harness) -> None:
    with connected(harness, lmtp="max_recipients = 10\ntrusted_clients = []") as wire:
        start_transaction(wire)
        rcpt = b"RCPT TO:<" + vaddr("alice@example.org").encode() + b">"
        wire.sock.sendall((rcpt + b"\r\n") * 2000)  # pipelined
        replies = [wire.reply()[:9] for _ in range(21)]
        assert replies == [b"250 2.1.5"] * 10 + [b"452 4.5.3"] * 10 + [b"421 4.5.3"]
        assert wire.closed()


def test_distinct_recipients_share_one_classification_and_keep_their_own_replies(
    harness: Harness, triages: list[bytes]
) -> None:
    listener = harness.start()
    rcpts = [vaddr(f"user{n}@example.org") for n in range(5)]
    rcpts.append(f"bounces@{BOUNCE_DOMAIN}")
    _, data = deliver(listener.lmtp_address, rcpts + rcpts[:2], PERMANENT)
    assert [code for code, _ in data] == [250] * 8
    assert [rcpt.encode() in msg for rcpt, (_, msg) in zip(rcpts + rcpts[:2], data, strict=True)] == [
        True
    ] * 8
    assert len(triages) == 1
    for n in range(5):
        assert listener.service.store.view(f"user{n}@example.org").events[0]["kind"] == "permanent"


@pytest.mark.parametrize(
    "local",
    [
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"al\x00ice", id="nul"),
        pytest.param(b"ali\x1bce", id="esc"),
        pytest.param("\u202ealice".encode(), id="rlo"),
    ],
)
def test_a_recipient_with_bad_bytes_is_550_5_1_3_not_a_traceback(harness: Harness, local: bytes) -> None:
    with connected(harness) as wire:
        start_transaction(wire)
        before = limited("bad-address")
        reply = wire.send(b"RCPT TO:<" + local + b"@" + BOUNCE_DOMAIN.encode() + b">")
        assert reply.startswith(b"550 5.1.3"), reply
        assert local not in reply  # the bad address is not echoed back
        assert limited("bad-address") - before == 1
        assert wire.send(b"NOOP").startswith(b"250")  # the session goes on


def test_two_thousand_bad_addresses_write_a_burst_of_lines_and_one_count(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    log.cut_lines.configure(burst=10, interval=60, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="bouncekeeper.lmtpd")
    rcpt = b"RCPT TO:<al\x00ice@" + BOUNCE_DOMAIN.encode() + b">\r\n"
    with connected(harness) as wire:
        start_transaction(wire)
        before = limited("bad-address")
        for batch in (100,) * 19 + (99,):  # pipelined, read back batch by batch
            wire.sock.sendall(rcpt * batch)
            assert all(wire.reply().startswith(b"550 5.1.3") for _ in range(batch))
        now[0] = 61.0  # the interval is over: the next line reports how many were held back
        assert wire.send(rcpt[:-2]).startswith(b"550 5.1.3")
    assert limited("bad-address") - before == 2000  # the metric counts every one
    lines = [r.getMessage().partition(": ")[2] for r in caplog.records if r.name == "bouncekeeper.lmtpd"]
    refused = [line for line in lines if "refused rcpt=" in line]
    assert len(refused) == 11  # ten in the first interval, the first of the next
    assert [line for line in lines if "suppressed" in line] == [
        "bad-address: 1989 similar lines suppressed in the last 61 s"
    ]


def test_aiosmtpds_lines_about_a_client_are_held_back_too(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    log.cut_lines.configure(burst=10, interval=60, clock=lambda: 0.0)
    caplog.set_level(logging.INFO)
    address = harness.start(lmtp="trusted_clients = []").lmtp_address
    assert isinstance(address, tuple)
    for _ in range(20):  # aiosmtpd says goodbye after five unknown commands
        wire = Wire(address)
        try:
            replies = [wire.send(b"XBOGUS")[:3] for _ in range(5)]
            assert replies == [b"500"] * 4 + [b"502"]
        finally:
            wire.close()
    library = [r for r in caplog.records if r.name == "mail.log"]
    assert not [r for r in library if r.levelno < logging.WARNING]  # its per-command lines: DEBUG only
    assert sum("unrecognised" in r.getMessage() for r in library) == 10  # of 100
    assert sum("too many bogus" in r.getMessage() for r in library) == 10  # of 20


def test_the_greeting_names_no_software_or_version(harness: Harness) -> None:
    with connected(harness, lmtp='hostname = "mx.example.test"') as wire:
        assert wire.greeting == b"220 mx.example.test ready\r\n"
        assert b"Python" not in wire.send(b"LHLO mta.example.test")


def test_a_long_command_line_is_refused_without_ending_the_session(harness: Harness) -> None:
    with connected(harness) as wire:
        start_transaction(wire)
        before = limited("command-line")
        reply = wire.send(b"RCPT TO:<" + b"x" * 1_000_000 + b"@" + BOUNCE_DOMAIN.encode() + b">")
        assert reply.startswith(b"500"), reply
        assert limited("command-line") - before == 1
        assert wire.send(b"RCPT TO:<" + vaddr("alice@example.org").encode() + b">").startswith(b"250")


def _rss_kb(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_ten_nine_megabyte_command_lines_cost_the_listener_no_memory(
    redis_db: RedisServer, tmp_path: pathlib.Path
) -> None:
    """The issue's attack: 10 connections with 9 MB command lines added 88 MB to the listener, kept."""
    port = free_port()
    settings_for(tmp_path, redis_db.url)  # writes the VERP key
    conf = tmp_path / "bk.toml"
    conf.write_text(
        f'state_dir = "{tmp_path}"\n[verp]\nbounce_domain = "{BOUNCE_DOMAIN}"\n'
        f'secret_files = ["{tmp_path / "verp.key"}"]\n[redis]\nurl = "{redis_db.url}"\n'
        f'[lmtp]\nlisten = "127.0.0.1:{port}"\n'
    )
    listener = ListenerProcess(conf, f"127.0.0.1:{port}", tmp_path / "lmtp.log").start()
    assert listener.proc is not None
    wires: list[Wire] = []
    try:
        wires = [Wire(("127.0.0.1", port)) for _ in range(10)]
        before = _rss_kb(listener.proc.pid)
        line = b"NOOP " + b"x" * (9 * 1024 * 1024)
        for wire in wires:
            assert wire.send(line).startswith(b"500")
        grown = _rss_kb(listener.proc.pid) - before
        assert grown < 8 * 1024, f"{grown} kB for 90 MB of command lines"
        assert all(wire.send(b"NOOP").startswith(b"250") for wire in wires)
    finally:
        for wire in wires:
            wire.close()
        listener.stop()


def test_connections_over_the_cap_get_421_and_are_closed(harness: Harness) -> None:
    listener = harness.start(lmtp="max_connections = 3\ntrusted_clients = []")
    address = listener.lmtp_address
    assert isinstance(address, tuple)
    before = limited("connections")
    wires = [Wire(address) for _ in range(3)]
    try:
        extra = socket.create_connection(address, timeout=10)
        with extra, extra.makefile("rb") as f:
            assert f.readline().startswith(b"421 4.3.2")
            assert f.read(1) == b""
        assert limited("connections") - before == 1
        assert all(wire.send(b"NOOP").startswith(b"250") for wire in wires)
        wires.pop().close()
        deadline = time.monotonic() + 10
        while len(listener.listener.sessions) > 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        again = Wire(address)  # a place freed is taken again
        wires.append(again)
        assert again.greeting.startswith(b"220")
    finally:
        for wire in wires:
            wire.close()


def test_a_busy_session_is_closed_at_its_deadline(harness: Harness) -> None:
    before = limited("session")
    with connected(harness, lmtp="timeout = 5\nsession_timeout = 0.5") as wire:
        replies = []
        for _ in range(200):  # a client that is never idle: one command every 50 ms, for 10 s
            replies.append(wire.send(b"NOOP"))
            if replies[-1].startswith(b"421"):
                break
            time.sleep(0.05)
        assert replies[-1].startswith(b"421 4.4.2")
        assert wire.closed()
        assert limited("session") - before == 1


def test_an_idle_session_is_counted_when_closed(harness: Harness) -> None:
    before = limited("idle")
    with connected(harness, lmtp="timeout = 0.3") as wire:
        assert wire.reply().startswith(b"421")  # aiosmtpd's own words on an idle timeout
        assert wire.closed()
        assert limited("idle") - before == 1


def test_three_forged_addresses_close_the_session(harness: Harness) -> None:
    before = limited("forged-session")
    with connected(harness, mode="enforce", lmtp="trusted_clients = []") as wire:
        start_transaction(wire)
        guesses = [forge(vaddr(f"g{n}@example.org")).encode() for n in range(3000)]
        # Pipelined, as the attack was: the answers stop at the third and the connection closes.
        wire.sock.sendall(b"".join(b"RCPT TO:<" + g + b">\r\n" for g in guesses))
        replies = [wire.reply()[:9] for _ in range(3)]
        assert replies == [b"550 5.7.1", b"550 5.7.1", b"421 4.7.0"]
        assert wire.closed()
        assert limited("forged-session") - before == 1


def test_a_client_that_keeps_guessing_gets_the_same_answer_for_valid_addresses(harness: Harness) -> None:
    address = harness.start(mode="enforce", lmtp="trusted_clients = []").lmtp_address
    assert isinstance(address, tuple)
    before = limited("forged-client")
    valid = vaddr("alice@example.org").encode()
    sessions = 0
    while True:  # new sessions, two guesses each, until the client's budget is spent
        sessions += 1
        wire = Wire(address)
        try:
            start_transaction(wire)
            first = wire.send(b"RCPT TO:<" + forge(vaddr(f"a{sessions}@example.org")).encode() + b">")
            if first.startswith(b"421"):
                break
            wire.send(b"RCPT TO:<" + forge(vaddr(f"b{sessions}@example.org")).encode() + b">")
        finally:
            wire.close()
        assert sessions <= throttle.PER_CLIENT
    assert sessions <= throttle.PER_CLIENT // 2 + 1
    wire = Wire(address)
    try:
        start_transaction(wire)
        # A valid address gets what a forged one gets: the oracle says nothing while the client is blocked.
        assert wire.send(b"RCPT TO:<" + valid + b">").startswith(b"421 4.7.0")
        assert wire.closed()
    finally:
        wire.close()
    assert limited("forged-client") - before >= 2


def test_the_mta_in_front_is_not_limited(harness: Harness) -> None:
    listener = harness.start(mode="enforce")  # trusted_clients: loopback by default
    rcpts = [forge(vaddr(f"g{n}@example.org")) for n in range(20)]
    rcpt, _ = deliver(listener.lmtp_address, [*rcpts, vaddr("alice@example.org")], PERMANENT)
    assert [code for code, _ in rcpt] == [550] * 20 + [250]


def test_a_bounce_still_flows_from_the_mta_with_plain_smtplib(harness: Harness) -> None:
    listener = harness.start(lmtp="max_recipients = 2")
    with listener.lmtp_client() as client:
        client.ehlo("mta.example.test")
        client.mail("<>")
        assert client.rcpt(vaddr("alice@example.org"))[0] == 250
        assert client.rcpt(vaddr("bob@example.org"))[0] == 250
        assert client.rcpt(vaddr("carol@example.org"))[0] == 452
        assert client.data(PERMANENT)[0] == 250
        assert client.getreply()[0] == 250


def test_the_mta_gets_in_over_the_connection_cap(harness: Harness, tmp_path: pathlib.Path) -> None:
    listener = harness.start(lmtp="max_connections = 2", listen=f"unix:{tmp_path}/lmtp.sock")
    path = listener.lmtp_address
    assert isinstance(path, str)
    held = [smtplib.LMTP(path, timeout=10) for _ in range(3)]  # a unix socket: always the MTA
    try:
        rcpt, data = deliver(path, [vaddr("alice@example.org")], PERMANENT)
        assert [code for code, _ in rcpt + data] == [250, 250]
    finally:
        for client in held:
            client.close()


def test_a_message_classified_up_to_its_work_caps_is_counted_once(harness: Harness) -> None:
    # A DSN naming more recipients than the classifier reads (core/limits.MAX_RECIPIENTS), to two
    # VERP addresses: one classification, so one count however many recipients it is delivered to.
    block = b"Final-Recipient: rfc822; u%d@example.org\nAction: failed\nStatus: 5.1.1\n\n"
    raw = hostile_mail._report(b"".join(block % i for i in range(MAX_RECIPIENTS + 10)))
    listener = harness.start()
    before = limited("classification")
    deliver(listener.lmtp_address, [vaddr("alice@example.org"), vaddr("bob@example.org")], raw)
    assert limited("classification") - before == 1
    deliver(listener.lmtp_address, [vaddr("carol@example.org")], PERMANENT)
    assert limited("classification") - before == 1, "an ordinary bounce reaches no cap"
