"""The milter's end-of-message steps (daemons/milter_eom.py) through the adapter, driven in-process by
pymilter's TestCtx against the real Service and a real redis-server: outbound VERP senders, suppression,
loops."""

from __future__ import annotations

import pathlib

import Milter
import pytest

from bouncekeeper.core import loops, verp
from bouncekeeper.daemons import milter_eom
from tests.support.milter_harness import (
    APP,
    INBOUND_IP,
    LOCAL_IP,
    ORDINARY,
    PROTECTED,
    Harness,
    harness,
    make_harness,
)
from tests.support.redis_server import RedisServer

__all__ = ["harness"]  # the fixture

# -- outbound ------------------------------------------------------------------------------------------


def test_outbound_mail_gets_the_signed_verp_sender_and_loses_the_context_header(harness: Harness) -> None:
    harness.connect(LOCAL_IP)
    raw = b"From: app@example.org\r\nX-Bouncekeeper-Context: News-42\r\nSubject: hi\r\n\r\nbody\r\n"
    rc = harness.feed(raw, APP, "Alice@Example.NET")
    assert rc == Milter.ACCEPT
    assert harness.ctx._envfromchanged
    assert harness.ctx._sender == f"<{harness.verp_for('alice@example.net', 'news-42')}>"
    decoded = harness.decode(harness.ctx._sender.strip("<>"))
    assert decoded.status == verp.VerpStatus.VALID
    assert decoded.recipient == "alice@example.net"
    assert decoded.context == "news-42"
    assert harness.ctx._msg["X-Bouncekeeper-Context"] is None


def test_outbound_sender_outside_the_patterns_is_accepted_at_data_untouched(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, '[verp]\nsenders = ["news@example.org", "*@lists.example.org"]')
    h.connect(LOCAL_IP)
    h.ctx._envfrom("<other@example.org>")
    assert h.ctx._envrcpt("<bob@example.net>") == Milter.CONTINUE
    assert h.ctx._data() == Milter.ACCEPT
    h.connect(LOCAL_IP)
    assert h.feed(ORDINARY, "x@lists.example.org", "bob@example.net") == Milter.ACCEPT
    assert h.ctx._envfromchanged
    h.store.close()


def test_split_mode_answers_452_to_the_second_recipient(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, '[verp]\nmulti_recipient = "split"')
    h.connect(LOCAL_IP)
    assert h.ctx._envfrom(f"<{APP}>") == Milter.CONTINUE
    assert h.ctx._envrcpt("<a@example.net>") == Milter.CONTINUE
    assert h.ctx._envrcpt("<b@example.net>") == Milter.TEMPFAIL
    assert h.ctx._reply[:2] == ("452", "4.5.3")
    h.store.close()


def test_token_mode_registers_the_recipients_and_signs_a_token(harness: Harness) -> None:
    harness.connect(LOCAL_IP)
    raw = b"Message-ID: <m1@example.org>\r\nSubject: hi\r\n\r\nbody\r\n"
    assert harness.feed(raw, APP, "a@example.net", "b@example.net") == Milter.ACCEPT
    decoded = harness.decode(harness.ctx._sender.strip("<>"))
    assert decoded.status == verp.VerpStatus.VALID
    assert decoded.token
    saved = harness.store.get_token(decoded.token)
    assert saved is not None
    assert "a@example.net" in str(saved)
    assert "b@example.net" in str(saved)


def test_token_mode_with_redis_down_leaves_the_sender_unchanged(
    harness: Harness, redis_db: RedisServer
) -> None:
    harness.connect(LOCAL_IP)
    redis_db.stop()
    assert harness.feed(ORDINARY, APP, "a@example.net", "b@example.net") == Milter.ACCEPT
    assert not harness.ctx._envfromchanged


def test_a_too_long_recipient_falls_back_to_token_mode(harness: Harness) -> None:
    harness.connect(LOCAL_IP)
    rcpt = "a.very.long.local.part.that.fills.the.verp@subdomain.example.net"
    assert harness.feed(ORDINARY, APP, rcpt) == Milter.ACCEPT
    decoded = harness.decode(harness.ctx._sender.strip("<>"))
    assert decoded.token


# -- suppression ---------------------------------------------------------------------------------------


def test_suppressed_recipient_is_refused_with_550_in_enforce_mode(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, '[milter]\nsuppression = "enforce"')
    h.disable("dead@example.net")
    h.connect(LOCAL_IP)
    h.ctx._envfrom(f"<{APP}>")
    assert h.ctx._envrcpt("<dead@example.net>") == Milter.REJECT
    assert h.ctx._reply[:2] == ("550", "5.1.1")
    assert h.ctx._envrcpt("<alive@example.net>") == Milter.CONTINUE
    h.store.close()


def test_suppressed_recipient_gets_a_header_in_observe_mode(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, '[milter]\nsuppression = "observe"')
    h.disable("dead@example.net")
    h.connect(LOCAL_IP)
    assert h.feed(ORDINARY, APP, "dead@example.net") == Milter.ACCEPT
    assert h.ctx._msg[milter_eom.SUPPRESSED_HEADER] == "dead@example.net"
    h.store.close()


def test_suppression_with_redis_down_blocks_nothing(tmp_path: pathlib.Path, redis_db: RedisServer) -> None:
    h = make_harness(tmp_path, redis_db, '[milter]\nsuppression = "enforce"')
    h.connect(LOCAL_IP)
    redis_db.stop()
    h.ctx._envfrom(f"<{APP}>")
    assert h.ctx._envrcpt("<dead@example.net>") == Milter.CONTINUE
    h.store.close()


# -- loops ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "headers"),
    [
        ("", b""),
        ("robot@remote.example", b"Auto-Submitted: auto-replied\r\n"),
        ("list@remote.example", b"Precedence: bulk\r\n"),
        (
            "mta@remote.example",
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n",
        ),
    ],
)
def test_loop_message_to_a_protected_address_is_dropped_and_recorded(
    harness: Harness, sender: str, headers: bytes
) -> None:
    harness.connect(INBOUND_IP)
    raw = b"From: x@remote.example\r\nSubject: auto\r\n" + headers + b"\r\nbody\r\n"
    assert harness.feed(raw, sender, PROTECTED) == Milter.DISCARD
    loops = [f for _id, f in harness.store.recent() if f.get("kind") == "loop"]
    assert [f["address"] for f in loops] == [PROTECTED]


def test_ordinary_message_to_a_protected_address_is_delivered(harness: Harness) -> None:
    harness.connect(INBOUND_IP)
    raw = b"From: x@remote.example\r\nAuto-Submitted: no\r\nSubject: hi\r\n\r\nbody\r\n"
    assert harness.feed(raw, "x@remote.example", PROTECTED) == Milter.ACCEPT


def test_loop_message_with_redis_down_is_deferred_not_delivered(
    harness: Harness, redis_db: RedisServer
) -> None:
    harness.connect(INBOUND_IP)
    redis_db.stop()
    assert harness.feed(b"Subject: x\r\n\r\nbody\r\n", "", PROTECTED) == Milter.TEMPFAIL
    assert harness.ctx._reply[:2] == ("451", "4.3.0")


def test_loop_action_tag_delivers_with_a_header(tmp_path: pathlib.Path, redis_db: RedisServer) -> None:
    h = make_harness(tmp_path, redis_db, '[milter]\nloop_action = "tag"')
    h.connect(INBOUND_IP)
    assert (
        h.feed(b"Precedence: junk\r\nSubject: x\r\n\r\nbody\r\n", "a@remote.example", PROTECTED)
        == Milter.ACCEPT
    )
    assert h.ctx._msg[milter_eom.LOOP_HEADER] == "precedence:junk"
    h.store.close()


def test_the_loop_guard_reads_the_core_vocabulary() -> None:
    def found(headers: list[tuple[str, str]], sender: str = "a@remote.example") -> tuple[str, ...]:
        return loops.header_signals(headers, envelope_sender=sender)

    assert found([("Auto-Submitted", "no")]) == ()
    assert found([("Auto-Submitted", "auto-generated; x=y")]) == ("auto-submitted:auto-generated",)
    assert found([("Precedence", "List")], "") == ("null-sender", "precedence:list")
    assert found([("Content-Type", "text/plain")]) == ()
    report = [("Content-Type", 'multipart/report; report-type="delivery-status"; boundary=x')]
    assert found(report) == ("multipart-report:delivery-status",)
    # What the milter's own copy of these rules missed, before there was one copy.
    assert found([("X-Autoreply", "yes")]) == ("x-autoreply",)
    assert found([("List-Id", "<l.example.org>")]) == ("list-id",)
    assert loops.is_loop(found([("List-Id", "<l.example.org>")]))
    # A subject a person can write is recorded with other signals, never decisive alone.
    assert found([("Subject", "Vacation photos")]) == ("vacation-subject",)
    assert not loops.is_loop(found([("Subject", "Vacation photos")]))


def test_a_vacation_subject_alone_is_delivered_and_an_x_autoreply_is_held(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, '[policy]\nmode = "enforce"\n[milter]\nloop_action = "tag"')
    h.connect(INBOUND_IP)
    assert h.feed(b"Subject: Vacation photos\r\n\r\nbody\r\n", "a@remote.example", PROTECTED) == Milter.ACCEPT
    assert milter_eom.LOOP_HEADER not in h.ctx._msg
    h.connect(INBOUND_IP)
    raw = b"X-Autoreply: yes\r\nSubject: Out of office\r\n\r\nbody\r\n"
    assert h.feed(raw, "a@remote.example", PROTECTED) == Milter.ACCEPT
    assert h.ctx._msg[milter_eom.LOOP_HEADER] == "x-autoreply vacation-subject"
    h.store.close()
