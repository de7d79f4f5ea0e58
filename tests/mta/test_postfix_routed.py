"""The routed Postfix set-up (postfix/routed/): the MX's sessions have no milter; a policy service sends
bounces and protected recipients' mail through an after-queue listener that has it.

One private Postfix built from postfix/*.snippet then postfix/routed/*.snippet (tests/support/postfix.py),
smtp-sink as the remote MX (and a second one refusing every recipient), `bouncekeeper milter` with its
policy service on unix sockets, a real redis-server. The same scenarios as tests/mta/test_postfix.py,
through the other route, plus what only this set-up has: ordinary mail never reaches the milter, and
bounces wait in this host's queue while Redis is down.
"""

from __future__ import annotations

import pathlib
import re
import smtplib
import tempfile
from collections.abc import Iterator

import pytest

from tests.support.milter import MilterProcess
from tests.support.mta_config import APP, BOUNCE_DOMAIN, settings_head
from tests.support.postfix import Postfix, Routed, SmtpSink, have_postfix
from tests.support.postfix_mta import PostfixMta, message, started
from tests.support.redis_server import RedisServer

pytestmark = [
    pytest.mark.mta,
    pytest.mark.skipif(not have_postfix(), reason="needs root and Postfix (scripts/sysdeps.sh)"),
]

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures" / "milter"
PROTECTED = "app-in@example.org"


class Mta(PostfixMta):
    def milter_sessions(self, daemon: str) -> int:
        """SMTP sessions of one Postfix listener that reached the milter (its DEBUG line per session)."""
        return self.milter.log().count(f"daemon={daemon} ")


@pytest.fixture(scope="module")
def mta() -> Iterator[Mta]:
    with tempfile.TemporaryDirectory(prefix="bk-pfr-") as tmp:
        d = pathlib.Path(tmp)
        d.chmod(0o755)
        redis = RedisServer(d / "redis")
        redis.start()
        key = d / "verp.key"
        key.write_text("mta-test-key-0123456789abcdef\n")
        sink = SmtpSink(d / "sink")
        dead = SmtpSink(d / "dead", reject="RCPT")  # 550 5.1.1 to every recipient
        postfix = Postfix(
            d / "postfix",
            relay_port=0,
            milter_socket=f"unix:{d}/milter.sock",
            routed=Routed(policy_socket=f"unix:{d}/policy.sock", watched=(BOUNCE_DOMAIN, PROTECTED)),
        )
        milter = MilterProcess(
            d,
            f"unix:{d}/milter.sock",
            settings_head(redis.url, [key])
            + f"""[milter]
# Every client is 127.0.0.1 here, our own Postfix included: the daemon names say what is what.
originating_networks = []
protected_recipients = ["{PROTECTED}"]
policy_socket = "unix:{d}/policy.sock"
policy_filter = "bouncekeeper:[127.0.0.1]:{postfix.ports["after-queue"]}"
""",
        )
        try:
            with started(postfix, sink, dead, BOUNCE_DOMAIN, milter) as (settings, signer):
                yield Mta(postfix, sink, redis, settings, signer, milter)
        finally:
            redis.stop()


@pytest.fixture
def mta_clean(mta: Mta) -> Mta:
    mta.reset()
    return mta


def _bounce() -> bytes:
    return (FIXTURES / "gmail-userunknown.eml").read_bytes()


def test_ordinary_inbound_mail_never_reaches_the_milter(mta_clean: Mta) -> None:
    mta = mta_clean
    # The MX listener's {daemon_name} is Postfix's default, $myhostname.
    front = mta.postfix.postconf("-h", "myhostname").strip()
    mta.send("smtp", "person@remote.example", ["x@example.net", "y@example.org"], message("r-ordinary"))
    msg = mta.sink.wait_for(lambda m: "Subject: r-ordinary" in m.text)
    assert sorted(msg.recipients) == ["x@example.net", "y@example.org"]
    mta.wait_queue_empty()
    # The control: a bounce on the same listener reaches the milter, after the queue, and its session is
    # logged (the start-up's port probes may add more: the count is not exact).
    mta.send("smtp", "", [mta.signer.address_for("carol@example.net", "")], _bounce())
    mta.wait_events("carol@example.net", bool)
    assert mta.milter_sessions("bouncekeeper-after-queue") >= 1
    assert mta.milter_sessions(front) == 0, mta.milter.log()[-3000:]


def test_outbound_mail_gets_the_signed_verp_sender_on_the_application_listener(mta_clean: Mta) -> None:
    mta = mta_clean
    mta.send("submission", APP, ["alice@example.net"], message("r-out"))
    msg = mta.sink.wait_for(lambda m: "Subject: r-out" in m.text)
    assert msg.sender == mta.signer.address_for("alice@example.net", "")


def test_a_remote_refusal_becomes_a_permanent_bounce_of_the_original_recipient(mta_clean: Mta) -> None:
    mta = mta_clean
    mta.send("submission", APP, ["gone@dead.test"], message("r-dead"))
    events = mta.wait_events("gone@dead.test", bool)
    assert events[0]["kind"] == "permanent"


@pytest.mark.parametrize(
    ("fixture", "rcpt", "kind"),
    [
        ("gmail-userunknown.eml", "dora@example.net", "permanent"),
        ("gmail-mailboxfull.eml", "dave@example.net", "temporary"),
    ],
)
def test_a_bounce_is_filtered_after_the_queue_recorded_and_dropped(
    mta_clean: Mta, fixture: str, rcpt: str, kind: str
) -> None:
    mta = mta_clean
    start = len(mta.postfix.log())
    verp_rcpt = mta.signer.address_for(rcpt, "")
    assert mta.send("smtp", "", [verp_rcpt], (FIXTURES / fixture).read_bytes()) == {}
    events = mta.wait_events(rcpt, bool)
    assert events[0]["kind"] == kind
    # The route, as Postfix logged it: FILTER from the policy, then the after-queue milter's discard.
    mta.postfix.wait_log(
        rf"FILTER bouncekeeper:\[127\.0\.0\.1\]:\d+; from=<> to=<{re.escape(verp_rcpt)}>", start=start
    )
    mta.postfix.wait_log(rf"milter-discard: END-OF-MESSAGE .*to=<{re.escape(verp_rcpt)}>", start=start)
    mta.wait_queue_empty()
    assert not any(verp_rcpt in m.recipients for m in mta.sink.messages())


def test_a_forged_verp_address_is_refused_at_rcpt_by_the_policy_service(mta_clean: Mta) -> None:
    mta = mta_clean
    good = mta.signer.address_for("erin@example.net", "")
    forged = good.replace("erin", "eric")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        mta.send("smtp", "", [forged], _bounce())
    (code, text) = next(iter(info.value.recipients.values()))
    assert (code, text[:5]) == (550, b"5.7.1")
    assert mta.events("erin@example.net") == []
    assert mta.events("eric@example.net") == []


@pytest.mark.parametrize(
    ("sender", "extra"),
    [
        ("", ""),
        ("robot@remote.example", "Auto-Submitted: auto-replied\r\n"),
        ("l@remote.example", "Precedence: list\r\n"),
    ],
)
def test_loop_messages_to_a_protected_address_are_dropped_and_recorded(
    mta_clean: Mta, sender: str, extra: str
) -> None:
    mta = mta_clean
    subject = f"r-loop-{sender or 'null'}"
    start = len(mta.postfix.log())
    mta.send("smtp", sender, [PROTECTED], message(subject, extra))
    mta.postfix.wait_log(rf"milter-discard.*to=<{PROTECTED}>", start=start)
    mta.wait_queue_empty()
    assert not any(f"Subject: {subject}" in m.text for m in mta.sink.messages())
    st = mta.store()
    try:
        assert [f["address"] for _id, f in st.recent() if f.get("kind") == "loop"] == [PROTECTED]
    finally:
        st.close()


def test_an_ordinary_message_to_a_protected_address_is_delivered(mta_clean: Mta) -> None:
    mta = mta_clean
    mta.send("smtp", "person@remote.example", [PROTECTED], message("r-protected"))
    msg = mta.sink.wait_for(lambda m: "Subject: r-protected" in m.text)
    assert msg.recipients == [PROTECTED]


def test_with_redis_down_a_bounce_waits_in_our_queue_and_is_recorded_after_the_retry(mta_clean: Mta) -> None:
    mta = mta_clean
    mta.redis.stop()
    start = len(mta.postfix.log())
    verp_rcpt = mta.signer.address_for("gil@example.net", "")
    # The sender gets 250 at once: the policy needs no Redis, and the message is ours to keep.
    assert mta.send("smtp", "", [verp_rcpt], _bounce()) == {}
    mta.postfix.wait_log(rf"to=<{re.escape(verp_rcpt)}>.*status=deferred.*451 4\.3\.0", start=start)
    mta.send("smtp", "person@remote.example", ["x@example.net"], message("r-redis-down"))
    mta.sink.wait_for(lambda m: "Subject: r-redis-down" in m.text)
    assert mta.postfix.queue(), "the bounce must still be queued, not lost"
    mta.redis.start()
    mta.postfix.flush()
    events = mta.wait_events("gil@example.net", bool)
    assert events[0]["kind"] == "permanent"
    mta.wait_queue_empty()


def test_with_the_milter_daemon_down_bounces_wait_and_ordinary_mail_flows(mta_clean: Mta) -> None:
    mta = mta_clean
    mta.milter.stop()
    try:
        verp_rcpt = mta.signer.address_for("hal@example.net", "")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            mta.send("smtp", "", [verp_rcpt], _bounce())
        (code, _text) = next(iter(info.value.recipients.values()))
        assert 400 <= code < 500  # the sender keeps it and retries
        mta.send("smtp", "person@remote.example", ["x@example.net"], message("r-milter-down"))
        mta.sink.wait_for(lambda m: "Subject: r-milter-down" in m.text)
    finally:
        mta.milter.start()
    assert mta.send("smtp", "", [verp_rcpt], _bounce()) == {}
    assert mta.wait_events("hal@example.net", bool)[0]["kind"] == "permanent"
