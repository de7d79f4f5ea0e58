"""The milter adapter, driven in-process by pymilter's TestCtx (which records chgfrom, replies, headers),
against the real Service and a real redis-server."""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator

import Milter
import Milter.testctx
import pytest
import redis

from bouncekeeper import cli, config, store, verpkeys
from bouncekeeper.core import loops, verp
from bouncekeeper.core.routing import MilterRouting
from bouncekeeper.core.scoring import State
from bouncekeeper.daemons import metrics, milter_adapter, milter_eom, milterd
from bouncekeeper.service import bounces
from bouncekeeper.store.event import Event, EventKind, Source
from tests.support.exim import free_port, wait_for_port
from tests.support.milter import MilterProcess
from tests.support.prometheus import moved, samples, scrape
from tests.support.redis_server import RedisServer

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "milter"
BOUNCE_DOMAIN = "bounces.example.org"
PROTECTED = "app-in@example.org"
APP = "app@example.org"
INBOUND_IP = "192.0.2.25"  # not in originating_networks
LOCAL_IP = "127.0.0.1"  # in the default originating_networks

ORDINARY = b"From: someone@remote.example\r\nTo: x@example.org\r\nSubject: hello\r\n\r\nJust mail.\r\n"


def _settings(tmp_path: pathlib.Path, redis: RedisServer, extra: str = "") -> config.Settings:
    key = tmp_path / "verp.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    sections: dict[str, list[str]] = {"verp": [], "milter": [], "policy": []}
    current = ""
    for line in extra.strip().splitlines():
        if line.startswith("["):
            current = line.strip("[] ")
        elif line.strip():
            sections[current].append(line)
    # The flow tests act as an enforcing site that lists its application's sender; the tests of the
    # defaults (observe, no sender listed) say so in `extra`.
    if not any(line.startswith("senders") for line in sections["verp"]):
        sections["verp"].append(f'senders = ["{APP}"]')
    if not any(line.startswith("mode") for line in sections["policy"]):
        sections["policy"].append('mode = "enforce"')
    text = f"""state_dir = "{tmp_path}/state"
[redis]
url = "{redis.url}"
[verp]
bounce_domain = "{BOUNCE_DOMAIN}"
secret_files = ["{key}"]
{chr(10).join(sections["verp"])}
[milter]
protected_recipients = ["{PROTECTED}"]
{chr(10).join(sections["milter"])}
[policy]
{chr(10).join(sections["policy"])}
"""
    return config.loads(text)


NO_REPLY_BITS = (
    Milter.P_NR_CONN | Milter.P_NR_HELO | Milter.P_NR_MAIL | Milter.P_NR_RCPT | Milter.P_NR_DATA
    | Milter.P_NR_UNKN | Milter.P_NR_EOH | Milter.P_NR_BODY | Milter.P_NR_HDR
)  # fmt: skip


class Ctx(Milter.testctx.TestCtx):  # type: ignore[misc]
    """TestCtx treats a NOREPLY or SKIP answer as a refusal and stops; a real MTA just goes on. For the
    flow tests offer what an MTA without no-reply and SKIP support offers (the milter then answers
    CONTINUE); negotiation itself is tested with the full offer below."""

    def __init__(self, offer_no_reply: bool = False) -> None:
        super().__init__()
        offer = 0x1FFFFF if offer_no_reply else 0x1FFFFF & ~NO_REPLY_BITS & ~Milter.P_SKIP
        self.offer = [Milter.CURR_ACTS, offer, 0, 0]

    def _negotiate(self) -> int:
        self._body = None
        self._bodyreplaced = False
        self._priv = None
        self._opts = list(self.offer)
        self._symlist = [None] * 7  # a new connection: macro lists are negotiated afresh
        self._stage = -1
        rc = int(Milter.negotiate_callback(self, self._opts))
        self._protocol = self._opts[1]
        return rc


class Harness:
    """One TestCtx connection to a BounceMilter built as `bouncekeeper milter` builds it."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.store = store.connect(settings)
        self.signer = verpkeys.load_signer(settings)
        assert self.signer is not None
        self.runtime = milter_adapter.Runtime(
            milterd.routing_from_settings(settings), bounces.Service(settings, self.store), self.signer
        )
        Milter.factory = lambda: milter_adapter.BounceMilter(self.runtime)
        self.ctx = Ctx()

    def connect(self, ip: str, daemon_name: str = "MTA") -> int:
        self.ctx._setsymval("{daemon_name}", daemon_name)
        self.ctx._setsymval("i", "4QTEST1")
        return int(self.ctx._connect(helo="client.example", ip=ip))

    def feed(self, raw: bytes, sender: str, *rcpts: str) -> int:
        return int(self.ctx._feedFile(io.BytesIO(raw), sender, *rcpts))

    def verp_for(self, rcpt: str, context: str = "", day: int | None = None) -> str:
        assert self.signer is not None
        if day is None:
            return self.signer.address_for(rcpt, context)
        return verp.encode(
            rcpt, keyring=self.signer.keyring, bounce_domain=BOUNCE_DOMAIN, day=day, context=context
        )

    def decode(self, address: str) -> verp.VerpResult:
        assert self.signer is not None
        return verp.decode(
            address,
            keyring=self.signer.keyring,
            bounce_domain=BOUNCE_DOMAIN,
            today=self.signer.today(),
            max_age_days=14,
        )


@pytest.fixture
def harness(tmp_path: pathlib.Path, redis_db: RedisServer) -> Iterator[Harness]:
    h = Harness(_settings(tmp_path, redis_db))
    yield h
    h.store.close()


def _harness(tmp_path: pathlib.Path, redis: RedisServer, extra: str) -> Harness:
    return Harness(_settings(tmp_path, redis, extra))


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
    h = _harness(tmp_path, redis_db, '[verp]\nsenders = ["news@example.org", "*@lists.example.org"]')
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
    h = _harness(tmp_path, redis_db, '[verp]\nmulti_recipient = "split"')
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


def _disable(h: Harness, address: str) -> None:
    event = Event(at=time.time(), kind=EventKind.DISABLED, source=Source.CLI, address=address, note="test")
    h.store.admin(address, "disable", event, state=State.DISABLED_ADMIN)


def test_suppressed_recipient_is_refused_with_550_in_enforce_mode(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = _harness(tmp_path, redis_db, '[milter]\nsuppression = "enforce"')
    _disable(h, "dead@example.net")
    h.connect(LOCAL_IP)
    h.ctx._envfrom(f"<{APP}>")
    assert h.ctx._envrcpt("<dead@example.net>") == Milter.REJECT
    assert h.ctx._reply[:2] == ("550", "5.1.1")
    assert h.ctx._envrcpt("<alive@example.net>") == Milter.CONTINUE
    h.store.close()


def test_suppressed_recipient_gets_a_header_in_observe_mode(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = _harness(tmp_path, redis_db, '[milter]\nsuppression = "observe"')
    _disable(h, "dead@example.net")
    h.connect(LOCAL_IP)
    assert h.feed(ORDINARY, APP, "dead@example.net") == Milter.ACCEPT
    assert h.ctx._msg[milter_eom.SUPPRESSED_HEADER] == "dead@example.net"
    h.store.close()


def test_suppression_with_redis_down_blocks_nothing(tmp_path: pathlib.Path, redis_db: RedisServer) -> None:
    h = _harness(tmp_path, redis_db, '[milter]\nsuppression = "enforce"')
    h.connect(LOCAL_IP)
    redis_db.stop()
    h.ctx._envfrom(f"<{APP}>")
    assert h.ctx._envrcpt("<dead@example.net>") == Milter.CONTINUE
    h.store.close()


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
    h = _harness(tmp_path, redis_db, '[milter]\nbounce_action = "accept"')
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
    h = _harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')
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
    h = _harness(tmp_path, redis_db, '[policy]\nmode = "observe"')
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
    h = _harness(tmp_path, redis_db, OBSERVE)
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
    h = _harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')
    h.connect(LOCAL_IP, daemon_name="postfix-internal")
    h.ctx._envfrom("<>")
    assert h.ctx._envrcpt(f"<bounces+x=y.example+1234567890abcdef@{BOUNCE_DOMAIN}>") == Milter.CONTINUE
    h.store.close()


# -- the defaults: opt in, observe without touching --------------------------------------------------

OBSERVE = '[policy]\nmode = "observe"'


def test_no_sender_listed_means_no_sender_is_rewritten(tmp_path: pathlib.Path, redis_db: RedisServer) -> None:
    h = _harness(tmp_path, redis_db, "[verp]\nsenders = []")
    h.connect(LOCAL_IP)
    raw = b"From: app@example.org\r\nX-Bouncekeeper-Context: news\r\nSubject: hi\r\n\r\nbody\r\n"
    assert h.feed(raw, APP, "alice@example.net") == Milter.ACCEPT
    assert not h.ctx._envfromchanged
    h.connect(LOCAL_IP, daemon_name="ORIGINATING")  # a SASL/submission sender: the same
    assert h.feed(raw, "someone@example.org", "alice@example.net") == Milter.ACCEPT
    assert not h.ctx._envfromchanged
    h.store.close()


def test_startup_says_which_senders_are_rewritten_and_what_observe_does() -> None:
    off = milterd.startup_lines(MilterRouting(senders=()), verp_on=True)
    assert "[verp] senders lists no sender, no sender is rewritten" in off[0]
    assert "mode=observe: the mail flow is left unchanged" in off[1]
    on = milterd.startup_lines(MilterRouting(senders=("app@example.org",), enforce=True), verp_on=True)
    assert on[0] == "VERP for the senders matching app@example.org"
    assert on[1].startswith("mode=enforce")
    assert "bounce_domain is empty" in milterd.startup_lines(MilterRouting(), verp_on=False)[0]


def test_observe_leaves_outbound_mail_as_it_came_and_logs_the_would_be_sender(
    tmp_path: pathlib.Path, redis_db: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    h = _harness(tmp_path, redis_db, OBSERVE + '\n[milter]\nsuppression = "enforce"')
    _disable(h, "dead@example.net")
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
    h = _harness(tmp_path, redis_db, OBSERVE + '\n[milter]\nloop_action = "reject"')
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
    h = _harness(tmp_path, redis_db, OBSERVE)
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
    h = _harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')
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
    h = _harness(tmp_path, redis_db, '[milter]\nloop_action = "reject"')
    h.connect(LOCAL_IP, daemon_name=AFTER_QUEUE)
    assert h.feed(b"Precedence: bulk\r\nSubject: x\r\n\r\nbody\r\n", "list@remote.example", PROTECTED) == (
        Milter.DISCARD
    )
    h.connect(INBOUND_IP)  # before the queue the same message is refused
    assert h.feed(b"Precedence: bulk\r\nSubject: x\r\n\r\nbody\r\n", "list@remote.example", PROTECTED) == (
        Milter.REJECT
    )
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
    h = _harness(tmp_path, redis_db, '[milter]\nloop_action = "tag"')
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
    h = _harness(tmp_path, redis_db, '[policy]\nmode = "enforce"\n[milter]\nloop_action = "tag"')
    h.connect(INBOUND_IP)
    assert h.feed(b"Subject: Vacation photos\r\n\r\nbody\r\n", "a@remote.example", PROTECTED) == Milter.ACCEPT
    assert milter_eom.LOOP_HEADER not in h.ctx._msg
    h.connect(INBOUND_IP)
    raw = b"X-Autoreply: yes\r\nSubject: Out of office\r\n\r\nbody\r\n"
    assert h.feed(raw, "a@remote.example", PROTECTED) == Milter.ACCEPT
    assert h.ctx._msg[milter_eom.LOOP_HEADER] == "x-autoreply vacation-subject"
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
    h = _harness(tmp_path, redis_db, "[milter]\naccept_early = false")
    h.connect(INBOUND_IP)
    assert h.ctx._envfrom("<someone@remote.example>") == Milter.CONTINUE
    assert h.ctx._envrcpt("<x@elsewhere.example>") == Milter.CONTINUE
    # ... so a later loop-guarded recipient of the same transaction is still seen.
    assert h.ctx._envrcpt(f"<{PROTECTED}>") == Milter.CONTINUE
    assert h.ctx._data() == Milter.CONTINUE
    h.store.close()


def test_an_internal_error_is_451_for_that_message(tmp_path: pathlib.Path, redis_db: RedisServer) -> None:
    h = _harness(tmp_path, redis_db, "")
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
    h = _harness(tmp_path, redis_db, '[milter]\nsuppression = "enforce"')
    _disable(h, "dead@example.net")
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


def test_daemon_with_metrics_listen_serves_metrics_and_nothing_else(redis_db: RedisServer) -> None:
    directory = pathlib.Path(tempfile.mkdtemp(prefix="bk-m-"))  # unix socket paths must stay short
    port = free_port()
    toml = f'[redis]\nurl = "{redis_db.url}"\n[milter]\nmetrics_listen = "127.0.0.1:{port}"\n'
    daemon = MilterProcess(directory, f"unix:{directory}/m.sock", toml, "metrics")
    try:
        daemon.start()
        wait_for_port(port, proc=daemon.proc)
        status, content_type, text = scrape(f"http://127.0.0.1:{port}/metrics")
        assert status == 200, daemon.log()
        assert content_type == metrics.CONTENT_TYPE
        assert "# TYPE bouncekeeper_decisions_total counter" in text
        assert "# TYPE bouncekeeper_store_seconds histogram" in text
        # Read from Redis at scrape time, as `bouncekeeper http` does.
        assert samples(text)['bouncekeeper_outbox_depth{stream="outbox"}'] == 0
        assert scrape(f"http://127.0.0.1:{port}/")[0] == 404
        assert scrape(f"http://127.0.0.1:{port}/metrics/x")[0] == 404
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


# -- the daemon ----------------------------------------------------------------------------------------


def test_daemon_opens_its_socket_writes_a_pid_file_and_stops_cleanly_on_sigterm(
    tmp_path: pathlib.Path,
) -> None:
    # [redis] url empty: the daemon runs its own embedded redis-server under state_dir, as `make run` does.
    directory = pathlib.Path(tempfile.mkdtemp(prefix="bk-d-"))  # unix socket paths must stay short
    try:
        # embedded_as_root: the suite runs as root, as `make run` may (contrib/dev.toml).
        toml = '[redis]\nembedded_as_root = true\n[milter]\nsocket_mode = "0640"\n'
        daemon = MilterProcess(directory, f"unix:{directory}/m.sock", toml, "d")
        daemon.config.write_text(daemon.config.read_text().replace('socket_mode = "0666"\n', "", 1))
        daemon.start()
        assert daemon.path is not None
        assert stat.S_IMODE(daemon.path.stat().st_mode) == 0o640
        pid_file = daemon.state_dir / "milter.pid"
        assert pid_file.read_text().strip() == str(daemon.proc.pid if daemon.proc else "")
        deadline = time.monotonic() + 10  # the embedded redis-server starts after the socket opens
        while not (daemon.state_dir / "redis" / "redis.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (daemon.state_dir / "redis" / "redis.sock").exists()
        assert daemon.terminate() == 0
        assert not daemon.path.exists()
        assert not pid_file.exists()
        assert "listening on" in daemon.log()
    finally:
        daemon.stop()
        # A daemon killed by a failing test leaves its embedded redis-server (own session) running.
        embedded = daemon.state_dir / "redis" / "redis.sock"
        if embedded.exists():
            with contextlib.suppress(redis.RedisError):
                redis.Redis(unix_socket_path=str(embedded)).shutdown(nosave=True)
        shutil.rmtree(directory, ignore_errors=True)


def test_daemon_refuses_a_bad_config_before_opening_the_socket(tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[milter]\noriginating_networks = ["10.0.0.0/33"]\n')
    done = subprocess.run(
        [sys.executable, "-m", "bouncekeeper.cli", "--config", str(cfg), "milter"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[2] / "milter")},
        timeout=30,
        check=False,
    )
    assert done.returncode == 78
    assert "milter.originating_networks[0]" in done.stderr


def test_config_check_refuses_what_the_milter_would_refuse(tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[milter]\nprotected_recipients = ["not an address"]\n')
    assert cli.main(["--config", str(cfg), "config", "check"]) == 78
    cfg.write_text('[milter]\nsocket_mode = "rw-rw----"\n')
    assert cli.main(["--config", str(cfg), "config", "check"]) == 78
    cfg.write_text('[verp]\nbounce_domain = "b.example"\n')  # VERP on, but no key
    assert cli.main(["--config", str(cfg), "config", "check"]) == 78


def _readable_by_others(path: pathlib.Path) -> bool:
    return all(p.stat().st_mode & 0o005 == 0o005 for p in (path, *path.parents) if p.exists())


@pytest.mark.skipif(
    os.geteuid() != 0 or not _readable_by_others(pathlib.Path(sysconfig.get_paths()["stdlib"])),
    reason="needs root, and a Python whose standard library the unprivileged user can read",
)
def test_daemon_drops_privileges_to_the_configured_user(redis_db: RedisServer) -> None:
    directory = pathlib.Path(tempfile.mkdtemp(prefix="bk-u-"))
    directory.chmod(0o755)
    os.chown(directory, pwd.getpwnam("nobody").pw_uid, -1)  # the user's own folder, as in deployment
    policy = directory / "p.sock"  # the routed set-up's policy service: bound before the drop as well
    toml = f'[redis]\nurl = "{redis_db.url}"\n[milter]\nuser = "nobody"\npolicy_socket = "unix:{policy}"\n'
    daemon = MilterProcess(directory, f"unix:{directory}/m.sock", toml, "u")
    try:
        daemon.start()
        assert daemon.proc is not None
        deadline = time.monotonic() + 10
        status = ""
        while "nobody" not in status and time.monotonic() < deadline:
            uid = pathlib.Path(f"/proc/{daemon.proc.pid}/status").read_text().split("Uid:")[1].split()[0]
            status = pwd.getpwuid(int(uid)).pw_name
            time.sleep(0.05)
        assert status == "nobody"
        assert daemon.path is not None
        assert daemon.path.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert policy.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(policy))
            client.sendall(b"request=smtpd_access_policy\nrecipient=x@example.org\n\n")
            assert client.makefile("rb").readline() == b"action=DUNNO\n"
        assert daemon.terminate() == 0
        assert not policy.exists()
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_a_connection_without_client_address_refuses_nothing_and_rewrites_nothing(
    tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    h = _harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')
    h.ctx._negotiate()
    h.ctx._setsymval("{daemon_name}", "MTA")
    h.ctx._stage = Milter.M_CONNECT
    Milter.connect_callback(h.ctx, "localhost", socket.AF_UNIX, "/some/socket")  # no IP address
    h.ctx._stage = None
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
    h = _harness(tmp_path, redis_db, '[policy]\nmode = "enforce"')
    h.ctx._negotiate()
    h.ctx._setsymval("{daemon_name}", "mta.example.test")
    h.ctx._stage = Milter.M_CONNECT
    Milter.connect_callback(h.ctx, "localhost", socket.AF_INET, ("127.0.0.1", 0))
    h.ctx._stage = None
    h.ctx._envfrom("<>")
    assert h.ctx._envrcpt(f"<bounces+x=y.example+1234567890abcdef@{BOUNCE_DOMAIN}>") == Milter.CONTINUE
    assert h.ctx.getpriv().internal
    h.ctx._stage = Milter.M_CONNECT
    Milter.connect_callback(h.ctx, "localhost", socket.AF_INET, ("127.0.0.1", 40000))  # a real client
    h.ctx._stage = None
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
