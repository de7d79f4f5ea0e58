"""The LMTP/SMTP listener: a real server on 127.0.0.1, spoken to with smtplib, writing to a real Redis."""

from __future__ import annotations

import logging
import pathlib
import re
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from bouncekeeper import cli, config, verpkeys
from bouncekeeper.core import verp
from bouncekeeper.service.bounces import Arrival, Outcome, Service
from tests.support.exim import free_port, wait_for_port
from tests.support.lmtp import BOUNCE_DOMAIN, SECRET, ListenerProcess, ListenerThread, settings_for
from tests.support.logs import restore_logging  # noqa: F401 - autouse: cli.main reconfigures logging
from tests.support.milter_harness import forge
from tests.support.prometheus import moved, samples, scrape
from tests.support.redis_server import RedisServer

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "lmtp"
RING = verp.Keyring.from_secrets([SECRET.encode()])


def crlf(raw: bytes) -> bytes:
    """What an MTA puts on the wire (RFC 5321 section 2.3.8)."""
    return re.sub(rb"\r?\n", b"\r\n", raw)


PERMANENT = crlf((FIXTURES / "lhost-postfix-30.eml").read_bytes())  # kijitora@example.br, 5.x userunknown
TEMPORARY = crlf((FIXTURES / "lhost-postfix-45.eml").read_bytes())  # kijitora@example.net, mailboxfull


def vaddr(rcpt: str, *, day: int | None = None) -> str:
    return verp.encode(
        rcpt, keyring=RING, bounce_domain=BOUNCE_DOMAIN, day=verpkeys.today() if day is None else day
    )


Replies = tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]


def deliver(where: tuple[str, int] | str, rcpts: list[str], data: bytes, *, sender: str = "") -> Replies:
    """One LMTP transaction: the RCPT replies, then one DATA reply per accepted recipient (RFC 2033)."""
    client = smtplib.LMTP(where, timeout=10) if isinstance(where, str) else smtplib.LMTP(*where, timeout=10)
    with client:
        client.ehlo("mta.example.test")  # LHLO for smtplib.LMTP
        client.mail(sender or "<>")
        rcpt_replies = [client.rcpt(r) for r in rcpts]
        accepted = sum(1 for code, _ in rcpt_replies if code == 250)
        data_replies: list[tuple[int, bytes]] = []
        if accepted:
            data_replies.append(client.data(data))
            data_replies += [client.getreply() for _ in range(accepted - 1)]
        return rcpt_replies, data_replies


class Harness:
    def __init__(self, redis: RedisServer, directory: pathlib.Path) -> None:
        self.redis = redis
        self.dir = directory
        self.running: list[tuple[ListenerThread, Service]] = []

    def start(
        self,
        *,
        mode: str = "observe",
        listen: str = "127.0.0.1:0",
        lmtp: str = "",
        service_class: type[Service] = Service,
    ) -> ListenerThread:
        settings = settings_for(self.dir, self.redis.url, mode=mode, listen=listen, lmtp=lmtp)
        service = service_class.open(settings)
        thread = ListenerThread(service, settings).start()
        self.running.append((thread, service))
        return thread

    def events(self, service: Service) -> list[dict[str, Any]]:
        return [fields for _, fields in service.store.recent(100)]

    def close(self) -> None:
        for thread, service in self.running:
            thread.stop()
            service.close()


@pytest.fixture
def harness(redis_db: RedisServer, tmp_path: pathlib.Path) -> Iterator[Harness]:
    h = Harness(redis_db, tmp_path)
    yield h
    h.close()


def test_each_recipient_gets_its_own_reply_and_its_own_record(harness: Harness) -> None:
    listener = harness.start()
    alice, bob = vaddr("alice@example.org"), vaddr("bob@example.org")
    rcpt, data = deliver(listener.lmtp_address, [alice, bob], PERMANENT)
    assert [code for code, _ in rcpt] == [250, 250]
    assert [code for code, _ in data] == [250, 250]
    assert alice.encode() in data[0][1]
    assert bob.encode() in data[1][1]
    store = listener.service.store
    for address in ("alice@example.org", "bob@example.org"):
        view = store.view(address)
        assert view.events, address
        assert view.events[0]["kind"] == "permanent"
        assert view.events[0]["source"] == "lmtp"


def test_one_info_line_per_recipient_with_the_queue_id(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    listener = harness.start()
    with caplog.at_level(logging.INFO, logger="bouncekeeper.lmtpd"):
        deliver(listener.lmtp_address, [vaddr("alice@example.org")], PERMANENT)
    lines = [r.getMessage() for r in caplog.records if r.name == "bouncekeeper.lmtpd"]
    recorded = [line for line in lines if "bounce recorded rcpt=alice@example.org kind=permanent" in line]
    assert len(recorded) == 1, lines
    assert re.match(r"[0-9a-f]{12}: bounce recorded ", recorded[0])


def test_the_lmtp_command_needs_a_bounce_domain(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "bk.toml"
    conf.write_text('[lmtp]\nlisten = "127.0.0.1:0"\n')
    assert cli.main(["--config", str(conf), "lmtp"]) == 78
    assert "verp.bounce_domain" in capsys.readouterr().err


def test_a_temporary_failure_is_recorded_as_temporary(harness: Harness) -> None:
    listener = harness.start()
    _, data = deliver(listener.lmtp_address, [vaddr("carol@example.org")], TEMPORARY)
    assert data[0][0] == 250
    (event, *_) = listener.service.store.view("carol@example.org").events
    assert (event["kind"], event["reason"]) == ("temporary", "mailboxfull")


class FailsForBob(Service):
    """Fault injection: the service fails inside for one recipient (a bug, not a Redis outage)."""

    def process_bounce(self, arrival: Arrival) -> Outcome:
        if "bob" in (arrival.envelope_rcpt or ""):
            raise RuntimeError("injected failure")
        return super().process_bounce(arrival)


def test_a_failure_inside_is_451_for_that_recipient_only_never_500(harness: Harness) -> None:
    listener = harness.start(service_class=FailsForBob)
    rcpts = [vaddr("alice@example.org"), vaddr("bob@example.org"), vaddr("dave@example.org")]
    _, data = deliver(listener.lmtp_address, rcpts, PERMANENT)
    assert [code for code, _ in data] == [250, 451, 250]
    assert data[1][1].startswith(b"4.3.0")


class CountsDecodes(Service):
    """Records each VERP decode (the RCPT check) the listener asks for."""

    decoded: ClassVar[list[str]] = []

    def check_rcpt(self, address: str) -> verp.VerpResult:
        CountsDecodes.decoded.append(address)
        return super().check_rcpt(address)


def test_each_recipient_is_decoded_once_at_rcpt_and_not_again_after_data(harness: Harness) -> None:
    CountsDecodes.decoded = []
    listener = harness.start(service_class=CountsDecodes)
    rcpts = [vaddr("alice@example.org"), vaddr("bob@example.org")]
    _, data = deliver(listener.lmtp_address, rcpts, PERMANENT)
    assert [code for code, _ in data] == [250, 250]
    assert CountsDecodes.decoded == rcpts


class BrokenCheck(Service):
    """Fault injection: the RCPT check itself raises (aiosmtpd's handle_exception path)."""

    def check_rcpt(self, address: str) -> verp.VerpResult:
        raise RuntimeError("injected failure")


def test_an_exception_in_a_command_is_451_not_aiosmtpds_500(harness: Harness) -> None:
    listener = harness.start(service_class=BrokenCheck)
    rcpt, data = deliver(listener.lmtp_address, [vaddr("alice@example.org")], PERMANENT)
    assert [(code, msg[:5]) for code, msg in rcpt] == [(451, b"4.3.0")]
    assert data == []


def test_redis_down_is_451_and_the_same_message_is_accepted_when_it_returns(harness: Harness) -> None:
    listener = harness.start()
    rcpts = [vaddr("alice@example.org"), vaddr("bob@example.org")]
    harness.redis.stop()
    rcpt, data = deliver(listener.lmtp_address, rcpts, PERMANENT)
    assert [code for code, _ in rcpt] == [250, 250]  # RCPT needs no Redis: the VERP check is pure
    assert [code for code, _ in data] == [451, 451]
    assert all(msg.startswith(b"4.3.0") for _, msg in data)
    harness.redis.start()
    _, data = deliver(listener.lmtp_address, rcpts, PERMANENT)
    assert [code for code, _ in data] == [250, 250]
    assert listener.service.store.view("alice@example.org").events[0]["kind"] == "permanent"


def test_recipient_outside_the_bounce_domain_is_550_5_1_1(harness: Harness) -> None:
    listener = harness.start()
    rcpt, data = deliver(
        listener.lmtp_address, ["alice@example.org", f"postmaster@{BOUNCE_DOMAIN}"], PERMANENT
    )
    assert [(code, msg[:5]) for code, msg in rcpt] == [(550, b"5.1.1"), (550, b"5.1.1")]
    assert data == []


@pytest.mark.parametrize(
    "address",
    [
        pytest.param(forge(vaddr("alice@example.org")), id="forged"),
        pytest.param(vaddr("alice@example.org", day=verpkeys.today() - 30), id="expired"),
    ],
)
def test_forged_or_expired_verp_is_550_5_7_1_in_enforce_mode(harness: Harness, address: str) -> None:
    listener = harness.start(mode="enforce")
    rcpt, _ = deliver(listener.lmtp_address, [address], PERMANENT)
    assert [(code, msg[:5]) for code, msg in rcpt] == [(550, b"5.7.1")]
    assert harness.events(listener.service) == []


def test_forged_verp_is_accepted_and_recorded_as_forged_in_observe_mode(harness: Harness) -> None:
    listener = harness.start(mode="observe")
    rcpt, data = deliver(listener.lmtp_address, [forge(vaddr("alice@example.org"))], PERMANENT)
    assert [code for code, _ in rcpt + data] == [250, 250]
    (event,) = harness.events(listener.service)
    assert event["kind"] == "forged"
    assert event["client"] == "127.0.0.1"
    # Never scored: the claimed recipient's counters are untouched.
    assert not listener.service.store.view("alice@example.org").tracked


def test_a_malformed_bounce_is_accepted_and_recorded_as_unrecognised(harness: Harness) -> None:
    listener = harness.start()
    garbage = b"\xff\xfe not a header\r\n\r\n\x00\x01 binary junk\r\n" * 3
    rcpt, data = deliver(listener.lmtp_address, [f"bounces@{BOUNCE_DOMAIN}"], garbage)
    assert [code for code, _ in rcpt + data] == [250, 250]
    (event,) = harness.events(listener.service)
    assert event["kind"] == "unrecognised"


def test_broken_mime_to_a_verp_address_is_never_a_5xx(harness: Harness) -> None:
    listener = harness.start()
    broken = (
        b'From: MAILER-DAEMON\r\nContent-Type: multipart/report; boundary="nope\r\n\r\n--nope\r\n'
        + b"x" * 5000  # one line far beyond RFC 5321's 1000 octets
        + b"\r\n--nope\r\nContent-Type: message/delivery-status\r\n\r\nStatus: 9.9\r\n"
    )
    _, data = deliver(listener.lmtp_address, [vaddr("alice@example.org")], broken)
    assert [code for code, _ in data] == [250]
    assert harness.events(listener.service) or listener.service.store.view("alice@example.org").events


def test_an_8_bit_message_id_is_recorded_once_not_tempfailed_on_every_retry(harness: Harness) -> None:
    # compat32 hands an 8-bit header value back as a Header, not a string: the dedup id once raised on it,
    # and the listener answered 451 to every retry of the bounce.
    listener = harness.start()
    bounce = re.sub(
        rb"(?mi)^Message-ID:[^\r\n]*", b"Message-ID: <caf\xc3\xa9\xe9@mx.example>", PERMANENT, count=1
    )
    assert b"\xc3\xa9" in bounce
    address = vaddr("alice@example.org")
    for _ in range(2):  # delivered again, as an MTA retries: one record
        _, data = deliver(listener.lmtp_address, [address], bounce)
        assert [code for code, _ in data] == [250]
    (event,) = listener.service.store.view("alice@example.org").events
    assert event["kind"] == "permanent"


def test_a_message_over_the_size_limit_gets_552_once_per_recipient(harness: Harness) -> None:
    listener = harness.start(lmtp="max_message_size = 2000")
    rcpts = [vaddr("alice@example.org"), vaddr("bob@example.org")]
    _, data = deliver(listener.lmtp_address, rcpts, PERMANENT)  # 3.6 kB
    assert [(code, msg[:5]) for code, msg in data] == [(552, b"5.3.4"), (552, b"5.3.4")]
    # The session is still in step: the next transaction works.
    _, data = deliver(listener.lmtp_address, rcpts[:1], b"Subject: small\r\n\r\nhi\r\n")
    assert [code for code, _ in data] == [250]


def test_smtp_listener_gives_one_reply_for_all_recipients(harness: Harness) -> None:
    listener = harness.start(lmtp='smtp_listen = "127.0.0.1:0"')
    host, port = listener.smtp_address
    rcpts = [vaddr("alice@example.org"), vaddr("bob@example.org")]
    with smtplib.SMTP(host, port) as client:
        refused = client.sendmail("<>", rcpts, PERMANENT)
    assert refused == {}
    assert listener.service.store.view("bob@example.org").events[0]["kind"] == "permanent"
    harness.redis.stop()
    with smtplib.SMTP(host, port) as client, pytest.raises(smtplib.SMTPDataError) as info:
        client.sendmail("<>", rcpts, TEMPORARY)
    assert info.value.smtp_code == 451
    harness.redis.start()


def test_concurrent_sessions_are_all_answered_and_recorded(harness: Harness) -> None:
    listener = harness.start(lmtp="workers = 4")
    results: dict[int, list[int]] = {}

    def send(i: int) -> None:
        _, data = deliver(listener.lmtp_address, [vaddr(f"user{i}@example.org")], PERMANENT)
        results[i] = [code for code, _ in data]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: [250] for i in range(20)}
    for i in range(20):
        assert listener.service.store.view(f"user{i}@example.org").events


def test_unix_socket_listener_serves_and_removes_its_socket_on_shutdown(harness: Harness) -> None:
    path = harness.dir / "lmtp.sock"
    listener = harness.start(listen=f"unix:{path}", lmtp="socket_mode = 0o666")
    assert listener.lmtp_address == str(path)
    assert path.stat().st_mode & 0o777 == 0o666
    _, data = deliver(str(path), [vaddr("alice@example.org")], PERMANENT)
    assert [code for code, _ in data] == [250]
    listener.stop()
    assert not path.exists()


class Slow(Service):
    """Fault injection: each message takes a while inside (a slow Redis), to stop the listener meanwhile."""

    def process_bounce(self, arrival: Arrival) -> Outcome:
        time.sleep(0.5)
        return super().process_bounce(arrival)


def test_shutdown_lets_a_message_being_processed_finish_and_answers_it(harness: Harness) -> None:
    listener = harness.start(service_class=Slow)
    replies: list[Replies] = []
    sender = threading.Thread(
        target=lambda: replies.append(deliver(listener.lmtp_address, [vaddr("alice@example.org")], PERMANENT))
    )
    sender.start()
    deadline = time.monotonic() + 10
    while not listener.listener.handler.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert listener.listener.handler.in_flight == 1
    listener.stop()  # while the message is inside process_bounce
    sender.join(10)
    ((_, data),) = replies
    assert [code for code, _ in data] == [250]
    assert listener.service.store.view("alice@example.org").events


def test_shutdown_closes_open_sessions_without_acknowledging_their_mail(harness: Harness) -> None:
    listener = harness.start()
    client = listener.lmtp_client()
    client.ehlo("mta.example.test")
    client.mail("<>")
    assert client.rcpt(vaddr("alice@example.org"))[0] == 250
    listener.stop()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.data(PERMANENT)
    assert not listener.service.store.view("alice@example.org").events
    client.close()


def test_an_idle_session_is_closed_after_the_timeout(harness: Harness) -> None:
    listener = harness.start(lmtp="timeout = 0.3")
    with listener.lmtp_client() as client:
        assert client.ehlo("mta.example.test")[0] == 250
        time.sleep(0.8)
        # 421 and closed: the next command reads the 421, and the one after finds the connection gone.
        assert client.noop()[0] == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def _command_config(tmp_path: pathlib.Path, redis_db: RedisServer, lmtp: str) -> pathlib.Path:
    """The config file of `bouncekeeper lmtp` on the test site's key and Redis, `lmtp` its [lmtp] table."""
    settings = settings_for(tmp_path, redis_db.url)
    conf = tmp_path / "bk.toml"
    conf.write_text(
        f'state_dir = "{tmp_path}"\n[verp]\nbounce_domain = "{BOUNCE_DOMAIN}"\n'
        f'secret_files = ["{settings.verp.secret_files[0]}"]\n[redis]\nurl = "{redis_db.url}"\n'
        f"[lmtp]\n{lmtp}"
    )
    return conf


def test_bouncekeeper_lmtp_command_serves_until_sigterm(
    redis_db: RedisServer, tmp_path: pathlib.Path
) -> None:
    port = free_port()
    conf = _command_config(tmp_path, redis_db, f'listen = "127.0.0.1:{port}"\n')
    listener = ListenerProcess(conf, f"127.0.0.1:{port}", tmp_path / "lmtp.log").start()
    try:
        _, data = deliver(("127.0.0.1", port), [vaddr("erin@example.org")], PERMANENT)
        assert [code for code, _ in data] == [250]
    finally:
        assert listener.stop() == 0, listener.log()
    client = redis_db.client()
    assert client.dbsize() > 0
    client.close()


def test_bouncekeeper_lmtp_serves_metrics_that_count_exactly_what_it_received(
    redis_db: RedisServer, tmp_path: pathlib.Path
) -> None:
    port, metrics_port = free_port(), free_port()
    conf = _command_config(
        tmp_path, redis_db, f'listen = "127.0.0.1:{port}"\nmetrics_listen = "127.0.0.1:{metrics_port}"\n'
    )
    listener = ListenerProcess(conf, f"127.0.0.1:{port}", tmp_path / "lmtp.log").start()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_for_port(metrics_port, proc=listener.proc)
        status, content_type, text = scrape(url)
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4")
        before = samples(text)
        rcpt, data = deliver(
            ("127.0.0.1", port), [vaddr("erin@example.org"), "someone@elsewhere.example"], PERMANENT
        )
        assert [code for code, _ in rcpt] == [250, 550]
        assert [code for code, _ in data] == [250]
        after = samples(scrape(url)[2])
        assert scrape(f"http://127.0.0.1:{metrics_port}/other")[0] == 404
    finally:
        assert listener.stop() == 0, listener.log()
    assert moved(before, after) == {
        'bouncekeeper_bounces_total{source="lmtp",kind="permanent",reason="userunknown"}': 1,
        'bouncekeeper_decisions_total{source="lmtp",decision="recorded"}': 1,
        'bouncekeeper_decisions_total{source="lmtp",decision="accept"}': 1,
        'bouncekeeper_decisions_total{source="lmtp",decision="reject"}': 1,
        'bouncekeeper_store_seconds_count{operation="process_bounce"}': 1,
    }
    assert after['bouncekeeper_outbox_depth{stream="outbox"}'] == 0


def test_a_metrics_port_in_use_stops_the_lmtp_command_with_a_config_error(
    redis_db: RedisServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        conf = _command_config(
            tmp_path, redis_db, f'listen = "127.0.0.1:0"\nmetrics_listen = "127.0.0.1:{busy}"\n'
        )
        assert cli.main(["--config", str(conf), "lmtp"]) == 78
    assert "lmtp.metrics_listen" in capsys.readouterr().err


def test_config_refuses_a_bad_listen_address() -> None:
    with pytest.raises(config.ConfigError, match="lmtp"):
        config.loads('[lmtp]\nlisten = "localhost"\n')
    with pytest.raises(config.ConfigError, match="smtp_listen"):
        config.loads('[lmtp]\nsmtp_listen = "unix:/tmp/x"\n')
    for section in ("lmtp", "milter"):
        with pytest.raises(config.ConfigError, match="metrics_listen"):
            config.loads(f'[{section}]\nmetrics_listen = "9124"\n')
        assert getattr(config.loads(f'[{section}]\nmetrics_listen = "[::1]:9124"\n'), section).metrics_listen


def test_sighup_re_reads_the_keys_without_dropping_a_session(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    new_key = tmp_path / "new.key"
    new_key.write_text("sighup-new-key-0123456789abcdef\n")
    port = free_port()
    conf = tmp_path / "bk.toml"
    head = f'state_dir = "{tmp_path}"\n[redis]\nurl = "{redis_db.url}"\n[policy]\nmode = "enforce"\n'
    lmtp = f'[lmtp]\nlisten = "127.0.0.1:{port}"\n'
    old_key = tmp_path / "old.key"
    old_key.write_text(SECRET + "\n")
    verp_old = f'[verp]\nbounce_domain = "{BOUNCE_DOMAIN}"\nsecret_files = ["{old_key}"]\n'
    conf.write_text(head + verp_old + lmtp)
    listener = ListenerProcess(conf, f"127.0.0.1:{port}", tmp_path / "lmtp.log").start()
    try:
        keyring = verp.Keyring.from_secrets([b"sighup-new-key-0123456789abcdef"])
        fresh = verp.encode(
            "kim@example.net", keyring=keyring, bounce_domain=BOUNCE_DOMAIN, day=int(time.time() // 86400)
        )
        with smtplib.LMTP("127.0.0.1", port, timeout=10) as open_session:
            open_session.ehlo("mta.example.test")
            open_session.mail("")
            assert open_session.rcpt(fresh)[0] == 550  # a key it does not know: forged
            open_session.rset()
            conf.write_text(head + verp_old.replace(f'["{old_key}"]', f'["{new_key}", "{old_key}"]') + lmtp)
            listener.reload()
            # The session opened before the reload goes on, and the new key verifies in it.
            open_session.mail("")
            assert open_session.rcpt(fresh)[0] == 250
            assert open_session.data(PERMANENT)[0] == 250
        assert listener.proc is not None
        assert listener.proc.poll() is None
    finally:
        listener.stop()
    client = redis_db.client()
    assert client.exists("bk:{kim@example.net}:track")
    client.close()


def test_sighup_applies_a_new_log_level(tmp_path: pathlib.Path, redis_db: RedisServer) -> None:
    # [log] level is not restart-only: at DEBUG, aiosmtpd's per-command lines ("mail.log") come back.
    port = free_port()
    conf = tmp_path / "bk.toml"
    key = tmp_path / "verp.key"
    key.write_text(SECRET + "\n")
    body = (
        f'state_dir = "{tmp_path}"\n[redis]\nurl = "{redis_db.url}"\n'
        f'[verp]\nbounce_domain = "{BOUNCE_DOMAIN}"\nsecret_files = ["{key}"]\n'
        f'[lmtp]\nlisten = "127.0.0.1:{port}"\n'
    )
    conf.write_text(body)
    listener = ListenerProcess(conf, f"127.0.0.1:{port}", tmp_path / "lmtp.log").start()

    def session() -> None:
        with smtplib.LMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("mta.example.test")
            client.noop()

    try:
        session()
        assert " mail.log: " not in listener.log()
        conf.write_text(body + '[log]\nlevel = "DEBUG"\n')
        listener.reload()
        session()
        listener.wait_log(" mail.log: ")
    finally:
        listener.stop()
