"""The milter adapter (daemons/milter_adapter.py), driven in-process by pymilter's TestCtx against the real
Service and a real redis-server: negotiation, bounces, observe mode, the after-queue listener, ordinary
mail, internal errors and the metrics the adapter moves."""

from __future__ import annotations

import pathlib
import socket
import time

import Milter
import pytest

from bouncekeeper.core import verp
from bouncekeeper.daemons import metrics, milter_eom
from tests.support.milter_harness import (
    APP,
    BOUNCE_DOMAIN,
    FIXTURES,
    INBOUND_IP,
    LOCAL_IP,
    ORDINARY,
    PROTECTED,
    Ctx,
    Harness,
    harness,
    make_harness,
)
from tests.support.prometheus import moved, samples
from tests.support.redis_server import RedisServer

__all__ = ["harness"]  # the fixture

# -- negotiation ---------------------------------------------------------------------------------------


def test_negotiation_skips_unused_steps_and_replies(harness: Harness) -> None:
    harness.ctx = Ctx(offer_no_reply=True)
    harness.ctx._negotiate()
    negotiated = harness.ctx._protocol  # what the MTA offered (everything), minus what we declined
    for step in (Milter.P_NOHELO, Milter.P_NOEOH, Milter.P_NOUNKNOWN):
        assert negotiated & step, "a step the milter does not use must be skipped"
    for step in (Milter.P_NOCONNECT, Milter.P_NOMAIL, Milter.P_NORCPT, Milter.P_NODATA, Milter.P_NOHDRS):
        assert not negotiated & step, "a step the milter uses must be kept"
    # connect, MAIL and header never change the verdict: the MTA need not wait for their reply.
    for no_reply in (Milter.P_NR_CONN, Milter.P_NR_MAIL, Milter.P_NR_HDR):
        assert negotiated & no_reply
    assert not negotiated & Milter.P_NR_RCPT
    assert negotiated & Milter.P_SKIP


def test_negotiation_asks_only_for_the_actions_used(harness: Harness) -> None:
    harness.connect(LOCAL_IP)
    actions = harness.ctx._opts[0]
    assert actions & Milter.CHGFROM
    assert not actions & (Milter.CHGBODY | Milter.ADDRCPT | Milter.QUARANTINE)


# -- bounces -------------------------------------------------------------------------------------------


def test_a_bounce_to_a_verp_address_is_recorded_for_the_original_recipient_and_discarded(
    harness: Harness,
) -> None:
    harness.connect(INBOUND_IP)
    rcpt = harness.verp_for("carol@example.net")
    rc = harness.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt)
    assert rc == Milter.DISCARD
    view = harness.store.view("carol@example.net")
    assert view.events, "the bounce must be in the address's history"
    assert view.events[0]["kind"] == "permanent"
    assert harness.store.view("userunknown@example.jp").events == []  # the VERP recipient wins


def test_a_temporary_bounce_is_recorded_as_temporary(harness: Harness) -> None:
    harness.connect(INBOUND_IP)
    rcpt = harness.verp_for("dave@example.net")
    assert harness.feed((FIXTURES / "gmail-mailboxfull.eml").read_bytes(), "", rcpt) == Milter.DISCARD
    assert harness.store.view("dave@example.net").events[0]["kind"] == "temporary"


def test_bounce_action_accept_lets_the_bounce_through(tmp_path: pathlib.Path, redis_db: RedisServer) -> None:
    h = make_harness(tmp_path, redis_db, '[milter]\nbounce_action = "accept"')
    h.connect(INBOUND_IP)
    rcpt = h.verp_for("erin@example.net")
    assert h.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt) == Milter.ACCEPT
    assert h.store.view("erin@example.net").events
    h.store.close()


def test_a_bounce_with_redis_down_gets_451_and_nothing_is_lost(
    harness: Harness, redis_db: RedisServer
) -> None:
    harness.connect(INBOUND_IP)
    redis_db.stop()
    rcpt = harness.verp_for("frank@example.net")
    assert harness.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt) == Milter.TEMPFAIL
    assert harness.ctx._reply[:2] == ("451", "4.3.0")


def test_postfix_internal_bounce_with_redis_down_is_never_tempfailed(
    harness: Harness, redis_db: RedisServer
) -> None:
    harness.connect(LOCAL_IP, daemon_name="postfix-internal")
    redis_db.stop()
    rcpt = harness.verp_for("gina@example.net")
    assert harness.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt) == Milter.ACCEPT


@pytest.mark.parametrize("kind", ["forged", "expired"])
def test_forged_or_expired_verp_address_is_refused_in_enforce_mode(
    tmp_path: pathlib.Path, redis_db: RedisServer, kind: str
) -> None:
    h = make_harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')
    if kind == "forged":
        good = h.verp_for("hank@example.net")
        rcpt = good[:-25] + ("0" if good[-25] != "0" else "1") + good[-24:]
    else:
        rcpt = h.verp_for("hank@example.net", day=int(time.time() // 86400) - 30)
    assert h.decode(rcpt).status == kind
    h.connect(INBOUND_IP)
    h.ctx._envfrom("<>")
    assert h.ctx._envrcpt(f"<{rcpt}>") == Milter.REJECT
    assert h.ctx._reply[:2] == ("550", "5.7.1")
    h.store.close()


def test_forged_verp_address_in_observe_mode_is_recorded_as_forged_and_scores_nothing(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, '[policy]\nmode = "observe"')
    good = h.verp_for("ivan@example.net")
    rcpt = good.replace("ivan", "ivon")  # same shape, wrong MAC
    h.connect(INBOUND_IP)
    assert h.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt) == Milter.ACCEPT
    view = h.store.view("ivan@example.net")
    assert view.hard_score == 0
    assert view.soft_count == 0
    assert h.store.view("ivon@example.net").hard_score == 0
    assert [f["kind"] for _id, f in h.store.recent()] == ["forged"]
    h.store.close()


def test_each_bounce_address_is_decoded_once_and_its_rcpt_verdict_is_what_is_recorded(
    tmp_path: pathlib.Path, redis_db: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_harness(tmp_path, redis_db, OBSERVE)
    valid = h.verp_for("judy@example.net")
    forged = h.verp_for("kurt@example.net").replace("kurt", "kort")
    decoded: list[str] = []
    check_rcpt = h.runtime.service.check_rcpt

    def counting(address: str) -> verp.VerpResult:
        decoded.append(address)
        return check_rcpt(address)

    monkeypatch.setattr(h.runtime.service, "check_rcpt", counting)
    h.connect(INBOUND_IP)
    raw = (FIXTURES / "gmail-userunknown.eml").read_bytes()
    assert h.feed(raw, "", valid, forged) == Milter.ACCEPT
    assert decoded == [valid, forged]  # at RCPT, and not again at end of message
    assert h.store.view("judy@example.net").events[0]["kind"] == "permanent"
    assert h.store.view("kort@example.net").events == []
    assert sorted(f["kind"] for _id, f in h.store.recent()) == ["forged", "permanent"]
    h.store.close()


def test_postfix_internal_path_never_rejects_a_forged_address(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')
    h.connect(LOCAL_IP, daemon_name="postfix-internal")
    h.ctx._envfrom("<>")
    assert h.ctx._envrcpt(f"<bounces+x=y.example+1234567890abcdef@{BOUNCE_DOMAIN}>") == Milter.CONTINUE
    h.store.close()


# -- the defaults: opt in, observe without touching --------------------------------------------------

OBSERVE = '[policy]\nmode = "observe"'


def test_no_sender_listed_means_no_sender_is_rewritten(tmp_path: pathlib.Path, redis_db: RedisServer) -> None:
    h = make_harness(tmp_path, redis_db, "[verp]\nsenders = []")
    h.connect(LOCAL_IP)
    raw = b"From: app@example.org\r\nX-Bouncekeeper-Context: news\r\nSubject: hi\r\n\r\nbody\r\n"
    assert h.feed(raw, APP, "alice@example.net") == Milter.ACCEPT
    assert not h.ctx._envfromchanged
    h.connect(LOCAL_IP, daemon_name="ORIGINATING")  # a SASL/submission sender: the same
    assert h.feed(raw, "someone@example.org", "alice@example.net") == Milter.ACCEPT
    assert not h.ctx._envfromchanged
    h.store.close()


def test_observe_leaves_outbound_mail_as_it_came_and_logs_the_would_be_sender(
    tmp_path: pathlib.Path, redis_db: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    h = make_harness(tmp_path, redis_db, OBSERVE + '\n[milter]\nsuppression = "enforce"')
    h.disable("dead@example.net")
    caplog.set_level("INFO", logger="bouncekeeper.milterd")
    h.connect(LOCAL_IP)
    raw = b"From: app@example.org\r\nX-Bouncekeeper-Context: news\r\nSubject: hi\r\n\r\nbody\r\n"
    assert h.feed(raw, APP, "alice@example.net") == Milter.ACCEPT
    assert not h.ctx._envfromchanged
    assert h.ctx._msg["X-Bouncekeeper-Context"] == "news", "observe removes no header"
    assert f"verp would rewrite sender={APP} new={h.verp_for('alice@example.net', 'news')}" in caplog.text
    # A disabled recipient under suppression = "enforce": not refused, not marked, only logged.
    assert h.feed(raw, APP, "dead@example.net") == Milter.ACCEPT
    assert h.ctx._msg[milter_eom.SUPPRESSED_HEADER] is None
    assert "would mark suppressed recipients: dead@example.net" in caplog.text
    # Several recipients: no token is registered (nothing in Redis), the mail keeps its sender.
    assert h.feed(raw, APP, "a@example.net", "b@example.net") == Milter.ACCEPT
    assert not h.ctx._envfromchanged
    assert not list(h.store._client.scan_iter("*token*"))
    h.store.close()


def test_observe_records_bounces_and_loops_and_passes_them_on(
    tmp_path: pathlib.Path, redis_db: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    h = make_harness(tmp_path, redis_db, OBSERVE + '\n[milter]\nloop_action = "reject"')
    caplog.set_level("INFO", logger="bouncekeeper.milterd")
    h.connect(INBOUND_IP)
    rcpt = h.verp_for("carol@example.net")
    assert h.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt) == Milter.ACCEPT
    assert h.store.view("carol@example.net").events[0]["kind"] == "permanent"
    assert "action=accept would=discard" in caplog.text
    loop = b"Precedence: bulk\r\nSubject: x\r\n\r\nbody\r\n"
    assert h.feed(loop, "list@remote.example", PROTECTED) == Milter.ACCEPT
    assert [f["address"] for _id, f in h.store.recent() if f.get("kind") == "loop"] == [PROTECTED]
    assert "loop would be refused (observe: passed on)" in caplog.text
    h.store.close()


def test_observe_passes_bounces_and_loops_on_when_redis_is_down(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, OBSERVE)
    h.connect(INBOUND_IP)
    redis_db.stop()
    rcpt = h.verp_for("frank@example.net")
    assert h.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt) == Milter.ACCEPT
    assert h.feed(b"Subject: x\r\n\r\nbody\r\n", "", PROTECTED) == Milter.ACCEPT
    h.store.close()


# -- the after-queue listener of the routed set-up (postfix/routed/) --------------------------------------

AFTER_QUEUE = "bouncekeeper-after-queue"


def test_after_queue_mail_from_our_own_postfix_is_inbound_not_outbound(harness: Harness) -> None:
    # Its client is this host's Postfix (127.0.0.1, originating by default): no VERP for mail from outside.
    harness.connect(LOCAL_IP, daemon_name=AFTER_QUEUE)
    assert harness.feed(ORDINARY, "someone@remote.example", "x@example.org") == Milter.ACCEPT
    assert not harness.ctx._envfromchanged
    harness.connect(LOCAL_IP)  # the same client on an ordinary listener is outbound
    assert harness.feed(ORDINARY, APP, "x@example.org") == Milter.ACCEPT
    assert harness.ctx._envfromchanged


def test_after_queue_never_rejects_a_forged_address_but_records_it(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    # A 550 here would make our own queue bounce it: the front's policy service is the place to refuse.
    h = make_harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')
    rcpt = h.verp_for("ivan@example.net").replace("ivan", "ivon")
    h.connect(LOCAL_IP, daemon_name=AFTER_QUEUE)
    assert h.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt) == Milter.DISCARD
    assert [f["kind"] for _id, f in h.store.recent()] == ["forged"]
    h.store.close()


def test_after_queue_bounce_with_redis_down_is_deferred_in_our_queue(
    harness: Harness, redis_db: RedisServer
) -> None:
    # Unlike Postfix's non-SMTP path, a 451 here is safe: the message waits in this host's queue.
    harness.connect(LOCAL_IP, daemon_name=AFTER_QUEUE)
    redis_db.stop()
    rcpt = harness.verp_for("frank@example.net")
    assert harness.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt) == Milter.TEMPFAIL
    assert harness.ctx._reply[:2] == ("451", "4.3.0")


def test_after_queue_loop_is_dropped_even_when_loops_are_refused(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, '[milter]\nloop_action = "reject"')
    h.connect(LOCAL_IP, daemon_name=AFTER_QUEUE)
    assert h.feed(b"Precedence: bulk\r\nSubject: x\r\n\r\nbody\r\n", "list@remote.example", PROTECTED) == (
        Milter.DISCARD
    )
    h.connect(INBOUND_IP)  # before the queue the same message is refused
    assert h.feed(b"Precedence: bulk\r\nSubject: x\r\n\r\nbody\r\n", "list@remote.example", PROTECTED) == (
        Milter.REJECT
    )
    h.store.close()


# -- everything else -----------------------------------------------------------------------------------


def test_ordinary_inbound_mail_is_accepted_at_its_first_recipient(harness: Harness) -> None:
    harness.connect(INBOUND_IP)
    assert harness.ctx._envfrom("<someone@remote.example>") == Milter.CONTINUE
    assert harness.ctx._envrcpt("<x@elsewhere.example>") == Milter.ACCEPT


def test_a_first_recipient_in_a_protected_address_domain_keeps_the_milter_until_data(
    harness: Harness,
) -> None:
    harness.connect(INBOUND_IP)
    assert harness.ctx._envfrom("<someone@remote.example>") == Milter.CONTINUE
    assert harness.ctx._envrcpt("<x@example.org>") == Milter.CONTINUE  # PROTECTED's domain
    assert harness.ctx._data() == Milter.ACCEPT


def test_a_watched_first_recipient_keeps_the_milter_until_data(harness: Harness) -> None:
    # The first recipient is in the bounce domain (here not a VERP address: postmaster@), so the
    # message may concern us: the later ordinary recipient does not end the milter's part.
    harness.connect(INBOUND_IP)
    assert harness.ctx._envfrom("<someone@remote.example>") == Milter.CONTINUE
    assert harness.ctx._envrcpt(f"<postmaster@{BOUNCE_DOMAIN}>") == Milter.CONTINUE
    assert harness.ctx._envrcpt("<x@elsewhere.example>") == Milter.CONTINUE
    assert harness.ctx._data() == Milter.ACCEPT
    # The next transaction on the same connection starts afresh.
    assert harness.ctx._envfrom("<someone@remote.example>") == Milter.CONTINUE
    assert harness.ctx._envrcpt("<x@elsewhere.example>") == Milter.ACCEPT


def test_without_accept_early_ordinary_mail_is_accepted_at_data(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, "[milter]\naccept_early = false")
    h.connect(INBOUND_IP)
    assert h.ctx._envfrom("<someone@remote.example>") == Milter.CONTINUE
    assert h.ctx._envrcpt("<x@elsewhere.example>") == Milter.CONTINUE
    # ... so a later loop-guarded recipient of the same transaction is still seen.
    assert h.ctx._envrcpt(f"<{PROTECTED}>") == Milter.CONTINUE
    assert h.ctx._data() == Milter.CONTINUE
    h.store.close()


def test_an_internal_error_is_451_for_that_message(tmp_path: pathlib.Path, redis_db: RedisServer) -> None:
    h = make_harness(tmp_path, redis_db, "")
    # A service that cannot even be called: the adapter's own safety net, not the store's.
    h.runtime.service = object()  # type: ignore[assignment]
    h.connect(INBOUND_IP)
    h.ctx._envfrom("<>")
    assert h.ctx._envrcpt(f"<{h.verp_for('x@example.net')}>") == Milter.TEMPFAIL
    assert h.ctx._reply[:2] == ("451", "4.3.0")
    h.store.close()


# -- metrics -------------------------------------------------------------------------------------------


def _registry() -> dict[str, float]:
    return samples(metrics.REGISTRY.render())


def test_a_bounce_and_an_ordinary_message_move_the_milter_metrics_by_exactly_that(harness: Harness) -> None:
    before = _registry()
    harness.connect(INBOUND_IP)
    rcpt = harness.verp_for("carol@example.net")
    assert harness.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt) == Milter.DISCARD
    harness.connect(INBOUND_IP)
    assert harness.feed(ORDINARY, "someone@remote.example", "x@example.org") == Milter.ACCEPT
    assert moved(before, _registry()) == {
        'bouncekeeper_bounces_total{source="milter",kind="permanent",reason="userunknown"}': 1,
        'bouncekeeper_decisions_total{source="milter",decision="recorded"}': 1,
        'bouncekeeper_decisions_total{source="milter",decision="discard"}': 1,
        'bouncekeeper_decisions_total{source="milter",decision="accept"}': 1,
        'bouncekeeper_store_seconds_count{operation="process_bounce"}': 1,
    }


def test_outbound_verp_loop_and_a_store_outage_are_counted_as_decisions(
    harness: Harness, redis_db: RedisServer
) -> None:
    before = _registry()
    harness.connect(LOCAL_IP)
    assert harness.feed(ORDINARY, APP, "alice@example.net") == Milter.ACCEPT
    harness.connect(INBOUND_IP)
    assert harness.feed(b"Precedence: bulk\r\nSubject: x\r\n\r\nbody\r\n", "a@remote.example", PROTECTED) == (
        Milter.DISCARD
    )
    redis_db.stop()
    harness.connect(INBOUND_IP)
    rcpt = harness.verp_for("frank@example.net")
    assert harness.feed((FIXTURES / "gmail-userunknown.eml").read_bytes(), "", rcpt) == Milter.TEMPFAIL
    assert moved(before, _registry()) == {
        'bouncekeeper_decisions_total{source="milter",decision="verp-rewrite"}': 1,
        'bouncekeeper_decisions_total{source="milter",decision="accept"}': 1,
        'bouncekeeper_decisions_total{source="milter",decision="loop"}': 1,
        'bouncekeeper_decisions_total{source="milter",decision="discard"}': 1,
        'bouncekeeper_decisions_total{source="milter",decision="tempfail"}': 1,
        'bouncekeeper_store_seconds_count{operation="record_loop"}': 1,
        'bouncekeeper_store_seconds_count{operation="process_bounce"}': 1,
        'bouncekeeper_store_errors_total{operation="process_bounce"}': 1,  # the outage
    }


def test_suppression_and_token_registration_are_counted_with_their_store_latency(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, '[milter]\nsuppression = "enforce"')
    h.disable("dead@example.net")
    before = _registry()
    h.connect(LOCAL_IP)
    h.ctx._envfrom(f"<{APP}>")
    assert h.ctx._envrcpt("<dead@example.net>") == Milter.REJECT
    h.connect(LOCAL_IP)
    assert h.feed(ORDINARY, APP, "a@example.net", "b@example.net") == Milter.ACCEPT  # token mode
    redis_db.stop()
    h.connect(LOCAL_IP)
    assert h.feed(ORDINARY, APP, "c@example.org") == Milter.ACCEPT  # unchecked, still signed
    assert moved(before, _registry()) == {
        'bouncekeeper_decisions_total{source="milter",decision="suppressed"}': 1,
        'bouncekeeper_decisions_total{source="milter",decision="reject"}': 1,
        'bouncekeeper_decisions_total{source="milter",decision="verp-rewrite"}': 2,
        'bouncekeeper_decisions_total{source="milter",decision="accept"}': 2,
        'bouncekeeper_store_seconds_count{operation="is_suppressed"}': 4,
        'bouncekeeper_store_seconds_count{operation="register_token"}': 1,
        'bouncekeeper_store_errors_total{operation="is_suppressed"}': 1,  # c@example.org, unchecked
    }
    h.store.close()


def test_a_connection_without_client_address_refuses_nothing_and_rewrites_nothing(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = make_harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')
    h.connect_raw(socket.AF_UNIX, "/some/socket", "MTA")  # no IP address
    h.ctx._envfrom("<someone@remote.example>")
    assert h.ctx._envrcpt(f"<bounces+x=y.example+1234567890abcdef@{BOUNCE_DOMAIN}>") == Milter.CONTINUE
    assert h.ctx._envrcpt("<user@example.net>") == Milter.CONTINUE
    assert h.ctx._data() == Milter.CONTINUE  # the (forged) bounce is kept for the record, not refused
    milter = h.ctx.getpriv()
    assert milter.internal
    assert not milter.originating
    h.store.close()


def test_postfix_simulated_client_with_port_0_is_the_non_smtp_path(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    # Postfix's cleanup gives non_smtpd_milters the client ("127.0.0.1", 0): even without the master.cf
    # daemon name, the milter must then never refuse (here a forged VERP address, in enforce mode).
    h = make_harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')
    h.connect_raw(socket.AF_INET, ("127.0.0.1", 0))
    h.ctx._envfrom("<>")
    assert h.ctx._envrcpt(f"<bounces+x=y.example+1234567890abcdef@{BOUNCE_DOMAIN}>") == Milter.CONTINUE
    assert h.ctx.getpriv().internal
    h.connect_raw(socket.AF_INET, ("127.0.0.1", 40000))  # a real client
    assert not h.ctx.getpriv().internal
    h.store.close()


def test_a_bounce_copy_is_removed_but_the_other_recipients_keep_theirs(harness: Harness) -> None:
    harness.connect(INBOUND_IP)
    verp_rcpt = harness.verp_for("kim@example.net")
    raw = (FIXTURES / "gmail-userunknown.eml").read_bytes()
    assert harness.feed(raw, "", verp_rcpt, "postmaster@example.org") == Milter.ACCEPT
    assert harness.ctx._delrcpt == [f"<{verp_rcpt}>"]
    assert harness.store.view("kim@example.net").events[0]["kind"] == "permanent"


def test_a_loop_copy_to_a_protected_address_is_removed_and_the_others_delivered(harness: Harness) -> None:
    harness.connect(INBOUND_IP)
    raw = b"Auto-Submitted: auto-replied\r\nSubject: away\r\n\r\nI am away.\r\n"
    assert harness.feed(raw, "robot@remote.example", PROTECTED, "someone@example.org") == Milter.ACCEPT
    assert harness.ctx._delrcpt == [f"<{PROTECTED}>"]
