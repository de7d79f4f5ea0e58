"""The fault test: Redis killed in the middle of traffic, then the milter, through the Postfix
configuration `bouncekeeper setup postfix` wrote (installed by docs/postfix.md's commands), inline and
routed (`--routed`).

Traffic: bounces from outside to VERP addresses (the test is the remote MTA: it retries what got a 4xx,
as one would), Postfix's own bounces (a remote MX refuses our VERP-signed mail with 550), and ordinary
mail (a person's outbound mail, inbound mail to a mailbox). Afterwards, with the queue flushed
(`postqueue -f`): every bounce recorded exactly once, no ordinary message waited for Redis, and none was
lost while the milter was dead.
"""

from __future__ import annotations

import pathlib
import smtplib
import tempfile
import threading
import time
from collections.abc import Callable

import pytest

from tests.support.dsn import postfix_dsn
from tests.support.mta_config import APP
from tests.support.postfix import have_postfix, wait_port
from tests.support.postfix_mta import message
from tests.support.postfix_setup import PERSON, Deployment, operators_host

pytestmark = [
    pytest.mark.mta,
    pytest.mark.slow,
    pytest.mark.skipif(not have_postfix(), reason="needs root and Postfix (scripts/sysdeps.sh)"),
]

Offer = Callable[[], bool]


def _offer(host: Deployment, listener: str, sender: str, rcpts: list[str], raw: bytes) -> Offer:
    """One delivery attempt as a remote MTA makes it: True once accepted, False on a 4xx (retry later)."""

    def attempt() -> bool:
        code = 250
        try:
            host.send(listener, sender, rcpts, raw)
        except smtplib.SMTPRecipientsRefused as exc:
            code = max(code for code, _ in exc.recipients.values())
        except smtplib.SMTPResponseException as exc:
            code = exc.smtp_code
        except smtplib.SMTPServerDisconnected:
            code = 421  # a remote MTA retries a dropped session too
        assert code < 300 or 400 <= code < 500, f"{rcpts}: {code}: a bounce or a message refused for good"
        return code < 300

    return attempt


def _retry(offers: list[Offer], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while offers:
        offers[:] = [offer for offer in offers if not offer()]
        assert time.monotonic() < deadline, f"{len(offers)} deliveries still refused"
        if offers:
            time.sleep(0.5)


def _bounce(host: Deployment, rcpt: str, n: int) -> Offer:
    verp = host.signer.address_for(rcpt, "")
    return _offer(host, "smtp", "", [verp], postfix_dsn(rcpt, to=verp, n=n))


def _ordinary(host: Deployment, tag: str) -> list[Offer]:
    out = _offer(host, "submission", PERSON, ["friend@example.net"], message(f"{tag}-out", sender=PERSON))
    inbound = message(f"{tag}-in", sender="friend@example.net")
    return [out, _offer(host, "smtp", "friend@example.net", [PERSON], inbound)]


def _delivered(host: Deployment, tag: str) -> int:
    """How many copies of the ordinary pair `tag` arrived (sink and mailbox): 2 when both did once."""
    out = sum(f"Subject: {tag}-out\n" in m.text for m in host.sink.messages())
    inbound = sum(f"Subject: {tag}-in\r\n" in m or f"Subject: {tag}-in\n" in m for m in host.mailbox("alice"))
    return out + inbound


def _exactly_once(host: Deployment, rcpts: list[str]) -> None:
    counts = {rcpt: len(host.events(rcpt)) for rcpt in rcpts}
    assert counts == dict.fromkeys(rcpts, 1), {r: c for r, c in counts.items() if c != 1}


def _recover(host: Deployment, pending: list[Offer]) -> None:
    _retry(pending)
    host.postfix.flush()
    host.wait_queue_empty()


def _install(host: Deployment, routed: bool) -> None:
    if not routed:
        host.run_documented("Install")
        return
    submission = f"127.0.0.1:{host.postfix.ports['submission']}/inet"
    host.run_documented("Install (routed)", {"submission/inet": submission})
    wait_port(int(host.settings.milter.policy_filter.rpartition(":")[2]))


def _redis_outage(host: Deployment, routed: bool) -> None:
    """Redis killed: bounces wait (inline: at the sender, 451; routed: accepted, then in our queue),
    Postfix's own bounces wait in the queue (the LMTP listener answers 451), ordinary mail flows."""
    before = [f"pre{i}@example.net" for i in range(5)]
    for i, rcpt in enumerate(before):
        assert _bounce(host, rcpt, i)()
    host.redis.stop()
    outside = [f"out-a{i}@example.net" for i in range(10)]
    own = [f"gone-a{i}@dead.test" for i in range(5)]
    pending = [_bounce(host, rcpt, 100 + i) for i, rcpt in enumerate(outside)]
    for i, rcpt in enumerate(own):
        assert _offer(host, "submission", APP, [rcpt], message(f"own-a{i}"))()
    ordinary = [f"ord-a{i}" for i in range(5)]
    for tag in ordinary:
        assert all(offer() for offer in _ordinary(host, tag))
    pending = [offer for offer in pending if not offer()]
    # Inline, the milter answers 451 on the MX; routed, the policy service needs no Redis (250) and the
    # after-queue listener's milter defers the bounce in our own queue.
    assert len(pending) == (0 if routed else len(outside))
    deadline = time.monotonic() + 20
    while any(_delivered(host, tag) < 2 for tag in ordinary):
        assert time.monotonic() < deadline, "ordinary mail waited for Redis"
        time.sleep(0.1)
    host.postfix.wait_log(r"status=deferred.*4\.3\.0", timeout=20)
    assert host.postfix.queue()  # bounces waiting for Redis
    host.redis.start()
    _recover(host, pending)
    _exactly_once(host, before + outside + own)
    assert all(_delivered(host, tag) == 2 for tag in ordinary)


def _milter_death(host: Deployment, routed: bool) -> None:
    """The milter daemon SIGKILLed in the middle of traffic, then restarted: per-milter default_action=accept
    lets mail through; bounces reach the LMTP listener by the transport (inline) or wait (routed: the
    policy service, in the same daemon, is gone, so their senders get 4xx and retry)."""
    outside = [f"out-b{i}@example.net" for i in range(20)]
    ordinary = [f"ord-b{i}" for i in range(20)]
    pending: list[Offer] = []
    sent = threading.Semaphore(0)

    def traffic() -> None:
        for i, (rcpt, tag) in enumerate(zip(outside, ordinary, strict=True)):
            for offer in (_bounce(host, rcpt, 200 + i), *_ordinary(host, tag)):
                if not offer():
                    pending.append(offer)
            sent.release()

    sender = threading.Thread(target=traffic)
    sender.start()
    for _ in range(6):
        sent.acquire()
    killed_at = len(host.postfix.log())
    host.milter.stop()  # SIGKILL, mid-traffic
    for _ in range(6):
        sent.acquire()
    assert host.milter.path is not None
    host.milter.path.unlink(missing_ok=True)
    host.milter.start()
    sender.join(120)
    # Postfix did meet the dead milter (and went on, per default_action=accept).
    host.postfix.wait_log(r"warning: connect to Milter service unix:\S*milter\.sock", start=killed_at)
    if routed:
        # The policy service died with the daemon: the bounces sent meanwhile got 4xx, and are retried.
        host.postfix.wait_log(r"warning: connect to \S*policy\.sock", start=killed_at)
        assert pending
    _recover(host, pending)
    _exactly_once(host, outside)
    counts = {tag: _delivered(host, tag) for tag in ordinary}
    assert counts == dict.fromkeys(ordinary, 2)


@pytest.mark.parametrize("routed", [False, True], ids=["inline", "routed"])
def test_redis_then_the_milter_killed_in_traffic_every_bounce_recorded_once_no_mail_lost(
    routed: bool,
) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bk-pffault-") as tmp,
        operators_host(pathlib.Path(tmp), routed=routed) as host,
    ):
        _install(host, routed)
        host.reset()
        _redis_outage(host, routed)
        _milter_death(host, routed)
