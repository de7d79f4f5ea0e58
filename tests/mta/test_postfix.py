"""The milter through a real Postfix: a private instance built from postfix/*.snippet, smtp-sink as the
remote MX, `bouncekeeper milter` on unix sockets, a real redis-server.

One Postfix instance for the module, with these listeners:
- `smtp`: the MX for the bounce domain and the protected address (the enforce milter, from the snippet);
- `submission`: the application's port, marked ORIGINATING as in postfix/master.cf.snippet;
- `observe`: the same, with a milter in observe mode;
- `remote`: no milter: stands in for a remote MTA that queues a bounce and delivers it to `smtp`
  (transport_maps), so Postfix's own retry after a 451 can be shown;
- `app` and `appmap`: the two set-ups of docs/verp-spec.md for an application that signs its own
  senders: a listener without milters, and the submission listener with the milter turned off for the
  client by `smtpd_milter_maps`.
Postfix's own bounces pass through the enforce milter via non_smtpd_milters (the snippet).
"""

from __future__ import annotations

import pathlib
import re
import smtplib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bouncekeeper.core import verp
from tests.support.header_milter import HeaderMilter
from tests.support.lifecycle import running
from tests.support.milter import MilterProcess
from tests.support.mta_config import APP, BOUNCE_DOMAIN, settings_head
from tests.support.postfix import Postfix, SmtpSink, have_postfix
from tests.support.postfix_mta import PostfixMta, message, started
from tests.support.redis_server import RedisServer

pytestmark = [
    pytest.mark.mta,
    pytest.mark.skipif(not have_postfix(), reason="needs root and Postfix (scripts/sysdeps.sh)"),
]

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures" / "milter"
PROTECTED = "app-in@example.org"


@dataclass
class Mta(PostfixMta):
    dead: SmtpSink
    observe: MilterProcess


def _toml(redis: RedisServer, key: pathlib.Path, mode: str) -> str:
    return (
        settings_head(redis.url, [key], mode=mode)
        + f"""[milter]
# Every client is 127.0.0.1 here: outbound is marked by the submission listener's daemon name instead.
originating_networks = []
protected_recipients = ["{PROTECTED}"]
"""
    )


@pytest.fixture(scope="module")
def mta() -> Iterator[Mta]:
    with tempfile.TemporaryDirectory(prefix="bk-pf-") as tmp:
        d = pathlib.Path(tmp)
        d.chmod(0o755)
        redis = RedisServer(d / "redis")
        redis.start()
        key = d / "verp.key"
        key.write_text("mta-test-key-0123456789abcdef\n")
        enforce = MilterProcess(d, f"unix:{d}/enforce.sock", _toml(redis, key, "enforce"), "enforce")
        observe = MilterProcess(d, f"unix:{d}/observe.sock", _toml(redis, key, "observe"), "observe")
        sink = SmtpSink(d / "sink")
        dead = SmtpSink(d / "dead", reject="RCPT")  # 550 5.1.1 to every recipient
        (d / "milter_map.cidr").write_text("127.0.0.1/32 DISABLE\n")
        postfix = Postfix(
            d / "postfix",
            relay_port=0,
            milter_socket=f"unix:{d}/enforce.sock",
            listeners={
                "submission": {"milter_macro_daemon_name": "ORIGINATING"},
                "observe": {"milter_macro_daemon_name": "MTA", "smtpd_milters": f"unix:{d}/observe.sock"},
                "remote": {"smtpd_milters": ""},
                "app": {"smtpd_milters": ""},
                "appmap": {
                    "milter_macro_daemon_name": "ORIGINATING",
                    "smtpd_milters": f"unix:{d}/enforce.sock,unix:{d}/seen.sock",
                    "smtpd_milter_maps": f"cidr:{d}/milter_map.cidr",
                },
            },
        )
        seen = HeaderMilter(d / "seen.sock", "X-Milter-Seen", "yes")
        try:
            with (
                running(seen),
                started(postfix, sink, dead, BOUNCE_DOMAIN, enforce, observe) as (settings, signer),
            ):
                yield Mta(postfix, sink, redis, settings, signer, enforce, dead, observe)
        finally:
            redis.stop()


@pytest.fixture
def mta_clean(mta: Mta) -> Mta:
    mta.reset()
    return mta


# 1 -----------------------------------------------------------------------------------------------------


def test_outbound_mail_reaches_the_mx_with_the_signed_verp_sender(mta_clean: Mta) -> None:
    mta = mta_clean
    mta.send("submission", APP, ["alice@example.net"], message("s1", "X-Bouncekeeper-Context: news-7\r\n"))
    msg = mta.sink.wait_for(lambda m: "Subject: s1" in m.text)
    assert msg.sender == mta.signer.address_for("alice@example.net", "news-7")
    assert msg.header("X-Bouncekeeper-Context") == []
    decoded = verp.decode(
        msg.sender,
        keyring=mta.signer.keyring,
        bounce_domain=BOUNCE_DOMAIN,
        today=mta.signer.today(),
        max_age_days=14,
    )
    assert (decoded.status, decoded.recipient, decoded.context) == ("valid", "alice@example.net", "news-7")


@pytest.mark.parametrize("listener", ["app", "appmap"])
def test_an_application_signed_sender_goes_out_untouched_and_its_bounce_is_recorded(
    mta_clean: Mta, listener: str
) -> None:
    mta = mta_clean
    alice, dead = f"alice-{listener}@example.net", f"gone-{listener}@dead.test"
    signed = mta.signer.address_for(alice, "app-1")
    mta.send(listener, signed, [alice], message(f"a-{listener}", "X-Bouncekeeper-Context: news-7\r\n"))
    msg = mta.sink.wait_for(lambda m: f"Subject: a-{listener}" in m.text)
    assert (msg.sender, msg.header("X-Bouncekeeper-Context")) == (signed, ["news-7"])
    # No milter saw it: appmap's second milter adds this header to every message it is given.
    assert msg.header("X-Milter-Seen") == []
    # dead.test refuses: Postfix's own bounce goes to the application's signed sender and is recorded.
    mta.send(listener, mta.signer.address_for(dead, "app-1"), [dead], message(f"d-{listener}"))
    events = mta.wait_events(dead, lambda e: bool(e))
    assert events[0]["kind"] == "permanent"


# 2 -----------------------------------------------------------------------------------------------------


def test_a_remote_refusal_becomes_a_permanent_bounce_of_the_original_recipient(mta_clean: Mta) -> None:
    mta = mta_clean
    start = len(mta.postfix.log())
    mta.send("submission", APP, ["gone@dead.test"], message("s2"))
    # Postfix writes its own bounce to the VERP sender; non_smtpd_milters shows it to the milter.
    events = mta.wait_events("gone@dead.test", lambda e: bool(e))
    assert events[0]["kind"] == "permanent"
    mta.postfix.wait_log(
        r"milter-discard: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]"
        r".*from=<> to=<bounces\+gone=dead\.test",
        start=start,
    )
    assert not any("s2" in m.text and m.sender == "" for m in mta.sink.messages())


# 3 -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "rcpt", "kind"),
    [
        ("gmail-userunknown.eml", "carol@example.net", "permanent"),
        ("gmail-mailboxfull.eml", "dave@example.net", "temporary"),
    ],
)
def test_real_bounces_to_verp_addresses_are_recorded_with_their_kind(
    mta_clean: Mta, fixture: str, rcpt: str, kind: str
) -> None:
    mta = mta_clean
    mta.send("smtp", "", [mta.signer.address_for(rcpt, "")], (FIXTURES / fixture).read_bytes())
    events = mta.wait_events(rcpt, lambda e: bool(e))
    assert events[0]["kind"] == kind


def test_a_multi_recipient_message_in_token_mode_is_attributed_to_each_recipient(mta_clean: Mta) -> None:
    mta = mta_clean
    mta.send("submission", APP, ["one@dead.test", "two@dead.test"], message("s3"))
    for rcpt in ("one@dead.test", "two@dead.test"):
        events = mta.wait_events(rcpt, lambda e: bool(e))
        assert events[0]["kind"] == "permanent"
    assert mta.events("three@dead.test") == []


# 4 -----------------------------------------------------------------------------------------------------


def _forged(mta: Mta, rcpt: str) -> str:
    good = mta.signer.address_for(rcpt, "")
    local, _, domain = good.partition("@")
    last = "0" if local[-1] != "0" else "1"
    return f"{local[:-1]}{last}@{domain}"


def test_a_forged_verp_address_is_refused_in_enforce_mode(mta_clean: Mta) -> None:
    mta = mta_clean
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        mta.send(
            "smtp", "", [_forged(mta, "erin@example.net")], (FIXTURES / "gmail-userunknown.eml").read_bytes()
        )
    (code, text) = next(iter(info.value.recipients.values()))
    assert code == 550
    assert b"5.7.1" in text
    assert mta.events("erin@example.net") == []


def test_the_third_forged_verp_address_ends_the_smtp_session(mta_clean: Mta) -> None:
    """The RCPT oracle (docs/hostile.md): the milter answers 421 at the third guess, Postfix disconnects."""
    mta = mta_clean
    with smtplib.SMTP("127.0.0.1", mta.postfix.port, timeout=30) as smtp:
        smtp.ehlo("guesser.example")
        smtp.mail("<>")
        guesses = [_forged(mta, f"guess{n}@example.net") for n in range(3)]
        assert [smtp.rcpt(g)[0] for g in guesses[:2]] == [550, 550]
        code, text = smtp.rcpt(guesses[2])
        assert (code, text[:5]) == (421, b"4.7.0")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()


def test_a_forged_verp_address_is_recorded_as_forged_in_observe_mode_and_scores_nothing(
    mta_clean: Mta,
) -> None:
    mta = mta_clean
    assert (
        mta.send(
            "observe",
            "",
            [_forged(mta, "fay@example.net")],
            (FIXTURES / "gmail-userunknown.eml").read_bytes(),
        )
        == {}
    )
    # Observe changes nothing in the mail flow: recorded, then passed on (here to the bounce domain's MX,
    # this Postfix's enforcing listener, which refuses the forged address).
    mta.postfix.wait_log(r"to=<bounces\+fay=example\.net.*status=bounced .*5\.7\.1")
    assert "fay=example.net" not in "".join(re.findall(r"milter-discard.*", mta.postfix.log()))
    assert "action=accept would=discard" in mta.observe.log()
    st = mta.store()
    try:
        view = st.view("fay@example.net")
        assert view.hard_score == 0
        assert view.soft_count == 0
        forged = [f for _id, f in st.recent() if f.get("kind") == "forged"]
        assert len(forged) == 1
        assert "bounces+fay=example.net" in forged[0]["note"]
    finally:
        st.close()


# 5 -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "extra"),
    [
        ("", ""),
        ("robot@remote.example", "Auto-Submitted: auto-replied\r\n"),
        ("l@remote.example", "Precedence: list\r\n"),
    ],
)
def test_loop_messages_to_a_protected_address_are_dropped(mta_clean: Mta, sender: str, extra: str) -> None:
    mta = mta_clean
    subject = f"loop-{sender or 'null'}"
    start = len(mta.postfix.log())
    mta.send("smtp", sender, [PROTECTED], message(subject, extra))
    mta.postfix.wait_log(rf"milter-discard.*to=<{PROTECTED}>", start=start)
    mta.wait_queue_empty()
    assert not any(f"Subject: {subject}" in m.text for m in mta.sink.messages())


def test_an_ordinary_message_to_a_protected_address_is_delivered(mta_clean: Mta) -> None:
    mta = mta_clean
    mta.send("smtp", "person@remote.example", [PROTECTED], message("s5-ordinary"))
    msg = mta.sink.wait_for(lambda m: "Subject: s5-ordinary" in m.text)
    assert msg.recipients == [PROTECTED]


# 6 -----------------------------------------------------------------------------------------------------


def test_with_redis_down_a_bounce_is_deferred_and_recorded_after_the_retry(mta_clean: Mta) -> None:
    mta = mta_clean
    mta.redis.stop()
    start = len(mta.postfix.log())
    verp_rcpt = mta.signer.address_for("gil@example.net", "")
    # A remote MTA (the `remote` listener) queues the bounce and delivers it to our MX.
    mta.send("remote", "", [verp_rcpt], (FIXTURES / "gmail-userunknown.eml").read_bytes())
    mta.postfix.wait_log(r"status=deferred.*451 4\.3\.0", start=start)
    # Ordinary mail keeps flowing meanwhile.
    mta.send("smtp", "person@remote.example", ["x@example.net"], message("s6-ordinary"))
    mta.sink.wait_for(lambda m: "Subject: s6-ordinary" in m.text)
    assert mta.postfix.queue(), "the bounce must still be queued, not lost"
    mta.redis.start()
    mta.postfix.flush()
    events = mta.wait_events("gil@example.net", lambda e: bool(e))
    assert events[0]["kind"] == "permanent"
    mta.wait_queue_empty()


def test_with_redis_down_postfix_own_bounce_is_passed_on_and_recorded_after_retry(mta_clean: Mta) -> None:
    # The non-SMTP path must never tempfail: Postfix's own bounce goes on to the bounce domain's route
    # (here this host's smtp listener), whose milter answers 451 until Redis is back.
    mta = mta_clean
    mta.redis.stop()
    start = len(mta.postfix.log())
    mta.send("submission", APP, ["lost@dead.test"], message("s6-internal"))
    mta.postfix.wait_log(r"to=<bounces\+lost=dead\.test.*status=deferred.*451 4\.3\.0", start=start)
    assert "milter-discard" not in mta.postfix.log()[start:]
    mta.redis.start()
    mta.postfix.flush()
    events = mta.wait_events("lost@dead.test", lambda e: bool(e))
    assert events[0]["kind"] == "permanent"
