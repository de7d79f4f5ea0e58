"""What a stranger's bounce can make Redis store and score: each attack of the security review
reproduced through the Service with the real classifier against a real redis-server, and its bound asserted.

The bounds (docs/security.md): Redis grows by at most GROWTH_FACTOR times the size of a hostile message;
a bounce without an authentic VERP address adds no key per address it names and never feeds a circuit
breaker; one signed VERP address (or token) scores each of its recipients once, however often replayed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bouncekeeper import config
from bouncekeeper.core import verp
from bouncekeeper.core.scoring import DAY
from bouncekeeper.service.bounces import MAX_RECIPIENTS, Arrival, Service, Source
from bouncekeeper.store import Store
from bouncekeeper.store.event import ENTRY_MAX_BYTES
from bouncekeeper.store.model import parse_entry
from tests.daemons.test_lmtpd import Harness, deliver, harness
from tests.support.dsn import hostile_dsn, postfix_dsn
from tests.support.lmtp import BOUNCE_DOMAIN
from tests.support.redis_server import RedisServer

__all__ = ["harness"]  # the fixture, shared with test_lmtpd

T0 = 1_763_769_600.0
KEYRING = verp.Keyring.from_secrets([b"0123456789abcdef0123456789abcdef"])
DOMAIN = "bounce.example.net"
PLAIN = "bounces@example.net"  # a bounce address with no signature
# Redis's growth per hostile message, at most this many times the message's size (docs/security.md):
# by default (require_verp = true: one stream entry per message), and opted in to scoring bounces without
# VERP (a stream entry, a history and a dedup key per address named). Before the fields were cut, the
# issue's DSN grew Redis by 153 times its size.
GROWTH_FACTOR = {True: 1, False: 10}


Make = Callable[..., Service]  # a Service with these [policy] settings


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make(redis_db: RedisServer) -> Iterator[tuple[Clock, Make]]:
    clock = Clock()
    services: list[Service] = []

    def service(**policy: Any) -> Service:
        settings = config.Settings(
            verp=config.VerpSettings(bounce_domain=DOMAIN),
            redis=config.RedisSettings(url=redis_db.url),
            policy=dataclasses.replace(config.ScoringSettings(mode="enforce"), **policy),
        )
        s = Service(settings, Store.from_settings(settings.redis), clock=clock, keyring=KEYRING)
        services.append(s)
        return s

    yield clock, service
    for s in services:
        s.close()


def vaddr(rcpt: str, now: float) -> str:
    return verp.encode(rcpt, keyring=KEYRING, bounce_domain=DOMAIN, day=int(now // DAY))


def used_memory(store: Store) -> int:
    """Redis's used_memory less what its clients' buffers hold at the moment (they come and go with the
    last command and reply; the listener's connections hold some): what the bounces left in Redis."""
    info = store._client.info("memory")
    return int(info["used_memory"]) - int(info["mem_clients_normal"])


def grow(service: Service, messages: list[bytes], rcpt: str = PLAIN) -> int:
    """Redis's used_memory growth over `messages` delivered to `rcpt`, after one message warmed up the
    stream and the scripts."""
    service.process_bounce(
        Arrival(
            postfix_dsn("warm@example.org", to=rcpt, n=0),
            envelope_rcpt=rcpt,
            envelope_sender="",
            source=Source.LMTP,
        )
    )
    before = used_memory(service.store)
    for raw in messages:
        service.process_bounce(Arrival(raw, envelope_rcpt=rcpt, envelope_sender="", source=Source.LMTP))
    return used_memory(service.store) - before


@pytest.mark.parametrize("require_verp", [True, False])
@pytest.mark.parametrize(
    ("rcpts", "message_id_octets", "terse"),
    [(200, 65_536, False), (MAX_RECIPIENTS, 0, True)],
    ids=["issue-200-rcpts-64k-message-id", "terse-100-rcpts"],
)
def test_redis_grows_within_a_small_factor_of_a_hostile_bounce(
    make: tuple[Clock, Make], require_verp: bool, rcpts: int, message_id_octets: int, terse: bool
) -> None:
    _clock, service = make
    s = service(require_verp=require_verp)
    messages = [
        hostile_dsn(
            [f"u{n}x{i}@example.com" for i in range(rcpts)],
            to=PLAIN,
            message_id_octets=message_id_octets,
            n=n,
            terse=terse,
        )
        for n in range(1, 6)
    ]
    size = sum(len(m) for m in messages)
    growth = grow(s, messages)
    assert growth <= GROWTH_FACTOR[require_verp] * size, (growth, size)
    # And the stream's entries are within their cap, the Message-ID cut to 256 octets.
    entries = s.store._client.xrevrange(s.store.keys.stream, count=50)
    assert max(len(fields["event"].encode()) for _, fields in entries) <= ENTRY_MAX_BYTES
    assert {len(parse_entry(fields).get("message_id", "")) for _, fields in entries} <= set(range(257))


def test_a_forged_dsn_naming_thousands_adds_no_key_per_address_and_opens_no_breaker(
    make: tuple[Clock, Make],
) -> None:
    _clock, service = make
    s = service()
    keys = s.store._client.dbsize()
    raw = hostile_dsn([f"user{i}@provider.example" for i in range(20_000)], to=PLAIN, terse=True)
    outcome = s.process_bounce(Arrival(raw, envelope_rcpt=PLAIN, envelope_sender="", source=Source.LMTP))
    assert not outcome.recorded
    assert len(outcome.unvouched) == MAX_RECIPIENTS
    # The classifier reads up to its own cap (Classification.limits); of those, 100 are recorded.
    named = len(outcome.classification.failures)
    assert outcome.cut == named - MAX_RECIPIENTS > 0
    # The stream, the stats counters and the message's own dedup mark: no per-address key, no breaker.
    assert s.store._client.dbsize() - keys == 3
    assert not s.store._client.keys("*provider.example*")
    assert s.store._client.xlen(s.store.keys.stream) <= MAX_RECIPIENTS + 2
    counters = s.store.counters()
    assert (counters["events:unvouched"], counters["cut:recipients"]) == (1, named - MAX_RECIPIENTS)
    ((_, entry),) = s.store.recent(1)
    assert entry["note"] == (
        "100 recipient(s) unscored: no authentic VERP address for them (require_verp); "
        f"{named} named, {named - 100} beyond the first 100 not read"
    )


def test_forged_dsns_naming_a_providers_addresses_never_open_its_breaker(make: tuple[Clock, Make]) -> None:
    _clock, service = make
    s = service(require_verp=False, breaker_addresses=10)
    for n in range(3):
        raw = hostile_dsn([f"u{n}x{i}@provider.example" for i in range(20)], to=PLAIN, n=n)
        s.process_bounce(Arrival(raw, envelope_rcpt=PLAIN, envelope_sender="", source=Source.LMTP))
    assert not s.store.frozen_domains()
    # Authentic bounces do count: ten signed ones open it.
    for i in range(10):
        rcpt = f"real{i}@provider.example"
        s.process_bounce(
            Arrival(
                postfix_dsn(rcpt, to=vaddr(rcpt, T0), n=100 + i),
                envelope_rcpt=vaddr(rcpt, T0),
                envelope_sender="",
                source=Source.LMTP,
            )
        )
    assert "provider.example" in s.store.frozen_domains()


def test_one_verp_address_replayed_every_day_never_disables_its_recipient(
    make: tuple[Clock, Make],
) -> None:
    clock, service = make
    s = service(hard_threshold=5)
    leaked = vaddr("alice@example.org", T0)
    for day in range(10):  # within the address's validity (14 days)
        clock.now = T0 + day * DAY + 60
        raw = postfix_dsn("alice@example.org", to=leaked, n=day)  # a new DSN each day
        outcome = s.process_bounce(Arrival(raw, envelope_rcpt=leaked, envelope_sender="", source=Source.LMTP))
        assert not outcome.forged
    view = s.store.view("alice@example.org", events=10)
    assert view.hard_score == 1
    assert not s.is_suppressed("alice@example.org")
    assert [e["scored"] for e in view.events] == [False] * 9 + [True]
    assert "already scored" in outcome.recorded[0].why


def test_three_forged_bounces_in_a_minute_do_not_disable_with_the_count_rule(
    make: tuple[Clock, Make],
) -> None:
    clock, service = make
    s = service(rule="count", count_threshold=3)
    leaked = vaddr("alice@example.org", T0)
    for n in range(3):
        clock.now = T0 + 20 * n
        s.process_bounce(
            Arrival(
                postfix_dsn("alice@example.org", to=leaked, n=n),
                envelope_rcpt=leaked,
                envelope_sender="",
                source=Source.LMTP,
            )
        )
    assert s.store.view("alice@example.org").hits == 1
    assert not s.is_suppressed("alice@example.org")
    # The mail of three different days still disables: each day's address is another.
    for day in (1, 2):
        clock.now = T0 + day * DAY
        rcpt = vaddr("alice@example.org", clock.now)
        s.process_bounce(
            Arrival(
                postfix_dsn("alice@example.org", to=rcpt, n=10 + day),
                envelope_rcpt=rcpt,
                envelope_sender="",
                source=Source.LMTP,
            )
        )
    assert s.is_suppressed("alice@example.org")


def test_a_token_bounce_scores_the_recipients_its_report_names_once_each(make: tuple[Clock, Make]) -> None:
    clock, service = make
    s = service(rule="count", count_threshold=2)
    token = s.register_token(["a@example.org", "b@example.org", "c@example.org"], message_id="<m@x>",
                             sender="app@example.net", context="")  # fmt: skip
    address = verp.encode_token(token, keyring=KEYRING, bounce_domain=DOMAIN, day=int(T0 // DAY))
    # The report names a and b (both the token's) and a stranger; c is not named.
    raw = hostile_dsn(["a@example.org", "b@example.org", "a@example.org", "z@example.org"], to=address)
    outcome = s.process_bounce(Arrival(raw, envelope_rcpt=address, envelope_sender="", source=Source.LMTP))
    assert sorted(d.address for d in outcome.recorded if d.scored) == ["a@example.org", "b@example.org"]
    assert outcome.unvouched == ("z@example.org",)
    assert s.store.view("c@example.org").hits == 0
    assert not s.store._client.keys("*z@example.org*")
    # Replayed (a new DSN to the same token address, an hour later): nothing more scores.
    clock.now += 3600
    again = hostile_dsn(["a@example.org", "b@example.org"], to=address, n=2)
    outcome = s.process_bounce(Arrival(again, envelope_rcpt=address, envelope_sender="", source=Source.LMTP))
    assert not any(d.scored for d in outcome.recorded)
    assert [s.store.view(a).hits for a in ("a@example.org", "b@example.org")] == [1, 1]


def test_the_issues_dsn_through_the_real_lmtp_listener_grows_redis_within_the_bound(
    harness: Harness,
) -> None:
    listener = harness.start(mode="enforce")
    store = listener.service.store
    plain = f"bounces@{BOUNCE_DOMAIN}"  # the bounce domain, no signature
    deliver(listener.lmtp_address, [plain], postfix_dsn("warm@example.org", to=plain, n=0))
    before, keys = used_memory(store), store._client.dbsize()
    size = 0
    for n in range(1, 6):
        raw = hostile_dsn([f"u{n}x{i}@provider.example" for i in range(200)], to=plain,
                          message_id_octets=65_536, n=n)  # fmt: skip
        size += len(raw)
        rcpt, data = deliver(listener.lmtp_address, [plain], raw)
        assert [code for code, _ in rcpt + data] == [250, 250]
    assert used_memory(store) - before <= GROWTH_FACTOR[True] * size
    assert store._client.dbsize() == keys + 5  # a dedup mark per message, no key per address named
    assert not store.frozen_domains()
    assert [f["kind"] for _, f in store.recent(5)] == ["unvouched"] * 5


def test_one_message_to_many_spellings_of_the_plain_address_is_one_stream_entry(harness: Harness) -> None:
    listener = harness.start(mode="enforce")
    store = listener.service.store
    # 100 letter-case spellings of the plain bounce address: distinct envelope recipients to the listener.
    spellings = [
        "".join(c.upper() if (n >> i) & 1 else c for i, c in enumerate("bounces")) + f"@{BOUNCE_DOMAIN}"
        for n in range(100)
    ]
    raw = hostile_dsn([f"u{i}@provider.example" for i in range(100)], to=spellings[0], terse=True)
    before = used_memory(store)
    rcpt, data = deliver(listener.lmtp_address, spellings, raw)
    assert {code for code, _ in rcpt + data} == {250}
    deliver(listener.lmtp_address, spellings[:1], raw)  # and delivered again
    assert store._client.xlen(store.keys.stream) == 1
    assert used_memory(store) - before <= GROWTH_FACTOR[True] * len(raw)
    assert store.counters()["duplicates"] == 100
