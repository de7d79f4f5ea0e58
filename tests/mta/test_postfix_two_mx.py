"""Several MTAs, one state: a primary and a backup MX (two real Postfix instances on loopback, each with
its own `bouncekeeper milter`) and two `bouncekeeper notify` processes share one Redis.

- the same bounce delivered to both MXes counts once (the store's dedup keys a bounce by its own
  Message-ID, and a signed VERP address scores its address once within the replay window);
- an address's counter and a domain's circuit breaker are the same whichever MX a bounce reaches;
- the outbox, served by two notifiers (each its own consumer in the stream's group), reaches the
  application once per event (at-least-once: a duplicate only after a notifier dies mid-request).
"""

from __future__ import annotations

import pathlib
import smtplib
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from bouncekeeper import config, store, verpkeys
from bouncekeeper.core.scoring import State
from bouncekeeper.store.keys import Keys
from bouncekeeper.store.outbox import GROUP
from tests.support.dsn import postfix_dsn
from tests.support.http_receiver import Receiver
from tests.support.lifecycle import running
from tests.support.milter import MilterProcess
from tests.support.notify_process import NotifyProcess
from tests.support.postfix import Postfix, SmtpSink, have_postfix
from tests.support.redis_server import RedisServer

pytestmark = [
    pytest.mark.mta,
    pytest.mark.slow,
    pytest.mark.skipif(not have_postfix(), reason="needs root and Postfix (scripts/sysdeps.sh)"),
]

BOUNCE_DOMAIN = "bounces.example.org"
APP = "app@example.org"
PREFIX = "bk2mx:"


def _toml(
    redis: RedisServer, key: pathlib.Path, app_key: pathlib.Path, receiver: Receiver, consumer: str
) -> str:
    return f"""[redis]
url = "{redis.url}"
prefix = "{PREFIX}"
[policy]
mode = "enforce"
rule = "count"
count_threshold = 3
breaker_addresses = 3
[verp]
bounce_domain = "{BOUNCE_DOMAIN}"
secret_files = ["{key}"]
senders = ["{APP}"]
[milter]
# Every client is 127.0.0.1 here: none of them is this site's own outbound mail.
originating_networks = []
[notify]
hard_bounces = true
consumer = "{consumer}"
poll = 0.1
[[notify.targets]]
name = "app"
default = true
url = "{receiver.url}/emails/{{address}}"
secret_file = "{app_key}"
"""


@dataclass
class TwoMx:
    primary: Postfix
    backup: Postfix
    redis: RedisServer
    settings: config.Settings
    signer: verpkeys.Signer
    receiver: Receiver
    notifiers: list[NotifyProcess]

    def deliver(self, mx: Postfix, rcpt: str, *, n: int, context: str = "") -> None:
        """A remote MTA delivers a bounce for `rcpt` to this MX (its milter answers at end of data)."""
        verp_address = self.signer.address_for(rcpt, context)
        with smtplib.SMTP("127.0.0.1", mx.port, timeout=30) as smtp:
            smtp.sendmail("", [verp_address], postfix_dsn(rcpt, to=verp_address, n=n))

    def store(self) -> store.Store:
        return store.connect(self.settings)


@pytest.fixture(scope="module")
def two_mx() -> Iterator[TwoMx]:
    with tempfile.TemporaryDirectory(prefix="bk-2mx-") as tmp:
        d = pathlib.Path(tmp)
        d.chmod(0o755)
        redis = RedisServer(d / "redis")
        key = d / "verp.key"
        key.write_text("two-mx-test-key-0123456789abcdef\n")
        app_key = d / "app.key"
        app_key.write_text("app-webhook-key-0123456789abcdef\n")
        receiver = Receiver()
        redis.start()
        receiver.start()
        sink = SmtpSink(d / "sink")
        milters, postfixes, notifiers = [], [], []
        for name in ("primary", "backup"):
            milter = MilterProcess(
                d, f"unix:{d}/{name}.sock", _toml(redis, key, app_key, receiver, name), name
            )
            milters.append(milter)
            notifiers.append(NotifyProcess(milter.config, d / f"notify-{name}.log"))
            postfixes.append(Postfix(d / f"postfix-{name}", relay_port=0, milter_socket=milter.socket))
        try:
            with running(*milters, sink):
                for postfix in postfixes:
                    postfix.relay_port = sink.port
                with running(*postfixes, *notifiers):
                    settings = config.load(milters[0].config)
                    signer = verpkeys.load_signer(settings)
                    assert signer is not None
                    yield TwoMx(postfixes[0], postfixes[1], redis, settings, signer, receiver, notifiers)
        finally:
            receiver.stop()
            redis.stop()


def test_the_same_bounce_delivered_to_both_mxes_counts_once(two_mx: TwoMx) -> None:
    two_mx.deliver(two_mx.primary, "twice@example.net", n=1)
    two_mx.deliver(two_mx.backup, "twice@example.net", n=1)  # the very same bounce, the other MX
    st = two_mx.store()
    try:
        view = st.view("twice@example.net")
        assert (len(view.events), view.hits) == (1, 1)  # the count rule counts hits
        assert st.counters()["duplicates"] == 1
    finally:
        st.close()


def test_the_counter_and_the_breaker_are_the_same_whichever_mx_a_bounce_reaches(two_mx: TwoMx) -> None:
    # Three hard bounces of one address (count rule, threshold 3), each to its own VERP address (a
    # newsletter each), alternating MXes: the third disables it, wherever it arrived.
    for n, mx in enumerate((two_mx.primary, two_mx.backup, two_mx.primary)):
        two_mx.deliver(mx, "thrice@example.com", n=10 + n, context=f"news-{n}")
    # Three addresses of one domain failing (breaker_addresses 3), one per MX in turn: the breaker opens.
    for n, mx in enumerate((two_mx.backup, two_mx.primary, two_mx.backup)):
        two_mx.deliver(mx, f"user{n}@failing.example", n=20 + n)
    st = two_mx.store()
    try:
        thrice = st.view("thrice@example.com")
        assert (thrice.state, thrice.hits, len(thrice.events)) == (State.DISABLED_BOUNCES, 3, 3)
        assert "failing.example" in st.frozen_domains()
    finally:
        st.close()


def test_two_notifiers_deliver_each_outbox_event_once(two_mx: TwoMx) -> None:
    rcpts = [f"notify{n}@example.org" for n in range(20)]
    client = two_mx.redis.client()
    try:
        # Both notifiers must be reading the group before the events come: on a loaded machine one may
        # still be starting, and the other would then rightly serve the whole outbox alone.
        deadline = time.monotonic() + 30
        while _consumers(client) != {"primary", "backup"}:
            assert time.monotonic() < deadline, "the notifiers did not join the outbox's group"
            time.sleep(0.1)
        for n, rcpt in enumerate(rcpts):
            two_mx.deliver(two_mx.primary if n % 2 else two_mx.backup, rcpt, n=100 + n)
        deadline = time.monotonic() + 30
        while client.xlen(Keys(PREFIX).outbox):
            assert time.monotonic() < deadline, "the notifiers did not empty the outbox"
            assert all(n.proc is not None and n.proc.poll() is None for n in two_mx.notifiers)
            time.sleep(0.1)
        # Both notifiers are consumers of the one group: the outbox was shared, not served twice.
        consumers = client.xinfo_consumers(Keys(PREFIX).outbox, GROUP)
    finally:
        client.close()
    delivered = Counter(
        (r.json()["address"], r.json()["type"]) for r in two_mx.receiver.delivered() if r.status == 200
    )
    mine = {key: count for key, count in delivered.items() if key[0] in rcpts}
    assert {address for address, _ in mine} == set(rcpts)
    assert set(mine.values()) == {1}, mine
    assert {c["name"].decode() for c in consumers} == {"primary", "backup"}


def _consumers(client: redis.Redis) -> set[str]:
    """The consumer names of the outbox's group (none while the notifiers have not created it)."""
    try:
        return {c["name"].decode() for c in client.xinfo_consumers(Keys(PREFIX).outbox, GROUP)}
    except redis.ResponseError:
        return set()
