"""The Redis store against real servers: one redis-server and a three-master Redis Cluster.

Every test taking `store` runs on both. The Lua steps are checked against core/scoring.py's `step`, the
executable specification; TTL resets are watched happen in Redis with windows of a second or two.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from bouncekeeper import config
from bouncekeeper.config import RedisSettings
from bouncekeeper.core.scoring import DAY, AddressState, Breaker, Effect, Mode, Rule, Rules, State, step, trip
from bouncekeeper.store import Outbox, Store, StoreUnavailable, attach, batch, connect
from bouncekeeper.store import keys as k
from bouncekeeper.store.event import ENTRY_MAX_BYTES, FIELD_MAX, Event, EventKind, Source
from bouncekeeper.store.model import Item
from tests.store.conftest import OpenStore
from tests.support.redis_cluster import RedisClusterServers
from tests.support.redis_server import RedisServer

T0 = 1_763_769_600.0
ENFORCE = Rules(mode=Mode.ENFORCE, breaker_addresses=0)
ADDRESS = "alice@example.org"


@pytest.fixture
def store(open_store: OpenStore) -> Store:
    return open_store(history_size=5)


_counter = iter(range(10**9))


def item(
    address: str = ADDRESS, effect: Effect = Effect.HARD, *, at: float = T0, id: str | None = None
) -> Item:
    kind = {Effect.HARD: EventKind.PERMANENT, Effect.SOFT: EventKind.TEMPORARY}.get(
        effect, EventKind.AUTOREPLY
    )
    event = Event(
        at=at,
        kind=kind,
        source=Source.CLI,
        address=address,
        id=id or f"ev{next(_counter)}",
        status="5.1.1",
        reason="userunknown",
        diagnostic="smtp; 550 5.1.1 no such user",
        remote_mta="mx.example.org",
        message_id="<m1@example.net>",
    )
    return Item(address, effect, event)


def test_score_rises_per_day_and_disables_at_threshold(store: Store) -> None:
    results = [store.record([item(at=T0 + d * DAY + h)], now=T0 + d * DAY + h, rules=ENFORCE)[0]
               for d in range(5) for h in (0, 3600)]  # fmt: skip
    assert [r.score for r in results] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [r.disabled for r in results].index(True) == 8
    assert results[-1].state is State.DISABLED_BOUNCES
    assert not results[-1].scored
    assert store.is_suppressed(ADDRESS)
    view = store.view(ADDRESS)
    assert view.state is State.DISABLED_BOUNCES
    assert view.by == "bounces"
    assert view.hard_score == 5
    # Disabled never expires: no reset time any more, and the history is kept with the state.
    assert view.hard_ttl is None
    assert len(view.events) == 5  # history_size
    kinds = [fields["kind"] for _, fields in store.recent(50)]
    assert kinds.count("disabled") == 1
    assert kinds.count("permanent") == 10


def test_observe_mode_announces_the_threshold_but_keeps_the_address_active(store: Store) -> None:
    rules = Rules(mode=Mode.OBSERVE, breaker_addresses=0, hard_threshold=2)
    store.record([item(at=T0)], now=T0, rules=rules)
    r = store.record([item(at=T0 + DAY)], now=T0 + DAY, rules=rules)[0]
    assert r.reached
    assert not r.disabled
    assert r.state is State.ACTIVE
    assert not store.is_suppressed(ADDRESS)
    assert [f["kind"] for _, f in store.recent(1)] == ["threshold"]


@pytest.mark.parametrize("rule", [Rule.DAILY, Rule.COUNT])
def test_observe_mode_announces_a_crossing_once_until_reset(store: Store, rule: Rule) -> None:
    rules = Rules(mode=Mode.OBSERVE, rule=rule, breaker_addresses=0, hard_threshold=2, count_threshold=2)
    results = [store.record([item(at=T0 + d * DAY)], now=T0 + d * DAY, rules=rules)[0] for d in range(5)]
    assert [r.reached for r in results] == [False, True, True, True, True]
    assert [r.crossed for r in results] == [False, True, False, False, False]
    assert all(r.scored for r in results)

    def announced() -> int:
        return [f["kind"] for _, f in store.recent(100)].count("threshold")

    assert announced() == 1
    event = Event(at=T0 + 5 * DAY, kind=EventKind.RESET, source=Source.CLI, address=ADDRESS)
    store.admin(ADDRESS, "reset", event)
    for d in (6, 7, 8):
        store.record([item(at=T0 + d * DAY)], now=T0 + d * DAY, rules=rules)
    assert announced() == 2


def test_observe_mode_announces_again_after_the_counter_expired(store: Store) -> None:
    rules = Rules(mode=Mode.OBSERVE, breaker_addresses=0, hard_threshold=1, quiet=1)
    assert store.record([item(at=T0)], now=T0, rules=rules)[0].crossed
    assert not store.record([item(at=T0 + DAY)], now=T0 + DAY, rules=rules)[0].crossed
    time.sleep(2.1)  # the score's quiet-period TTL (1 s) ran out in Redis: the score is back to zero
    assert store.record([item(at=T0 + 2 * DAY)], now=T0 + 2 * DAY, rules=rules)[0].crossed
    assert [f["kind"] for _, f in store.recent(100)].count("threshold") == 2


EFFECTS = st.sampled_from([Effect.HARD, Effect.SOFT, Effect.NONE])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.tuples(EFFECTS, st.integers(min_value=0, max_value=3 * 3600)), min_size=1, max_size=25),
    rule=st.sampled_from([Rule.DAILY, Rule.COUNT]),
)
def test_lua_step_matches_the_pure_policy(store: Store, steps: list[tuple[Effect, int]], rule: Rule) -> None:
    # "Days" of an hour and windows of a few hours on a synthetic clock. Redis's TTLs run on the real
    # clock, so when the model says a counter's TTL has run out, the test deletes that key, as the TTL
    # would have (the TTLs themselves are watched firing in test_counters_reset_by_redis_ttl).
    rules = Rules(mode=Mode.ENFORCE, rule=rule, day_length=3600, soft_threshold=3, hard_threshold=4,
                  soft_window=5 * 3600, quiet=6 * 3600, count_threshold=4, count_window=4 * 3600,
                  breaker_addresses=0)  # fmt: skip
    store._client.flushall()
    model = AddressState()
    now = T0
    for effect, gap in steps:
        now += gap
        aged = model.at(now, rules)
        for suffix, before, after in (
            (k.SOFT, model.soft_count, aged.soft_count),
            (k.TRACK, model.hard_score, aged.hard_score),
            (k.HITS, len(model.hits), len(aged.hits)),
        ):
            if before and not after:
                store._client.delete(store.keys.address(ADDRESS, suffix))
        expected = step(model, effect, now, rules)
        got = store.record([item(effect=effect, at=now)], now=now, rules=rules)[0]
        model = expected.state
        assert (got.state, got.score, got.soft_count) == (model.state, model.score(rules), model.soft_count)
        assert (got.scored, got.converted, got.disabled, got.reached) == (
            expected.scored,
            expected.converted,
            expected.disabled,
            expected.reached,
        )


def test_counters_reset_by_redis_ttl(store: Store) -> None:
    rules = Rules(mode=Mode.ENFORCE, soft_window=1, quiet=2, breaker_addresses=0)
    now = time.time()
    store.record([item(effect=Effect.SOFT, at=now)], now=now, rules=rules)
    store.record([item(effect=Effect.HARD, at=now)], now=now, rules=rules)
    view = store.view(ADDRESS)
    assert (view.soft_count, view.hard_score) == (1, 1)
    assert view.soft_ttl is not None
    assert view.soft_ttl <= 1
    time.sleep(1.2)
    view = store.view(ADDRESS)
    assert (view.soft_count, view.hard_score) == (0, 1)
    time.sleep(1.0)
    view = store.view(ADDRESS)
    assert (view.soft_count, view.hard_score, view.hard_ttl) == (0, 0, None)
    # The history shares the score's key (one key per tracked address) and went with it; the events
    # stay in the global stream.
    assert view.events == []
    assert len(store.recent(10)) == 2


def test_disabled_state_has_no_ttl(store: Store) -> None:
    rules = Rules(mode=Mode.ENFORCE, hard_threshold=1, quiet=1, breaker_addresses=0)
    store.record([item()], now=T0, rules=rules)
    assert store._client.ttl(store.keys.address(ADDRESS, k.STATE)) == -1
    time.sleep(1.1)
    view = store.view(ADDRESS)
    assert view.state is State.DISABLED_BOUNCES
    # ... and the events that disabled it outlive the quiet period too.
    assert [e["kind"] for e in view.events] == ["permanent"]
    assert store._client.ttl(store.keys.address(ADDRESS, k.TRACK)) == -1


def test_same_bounce_delivered_twice_counts_once(store: Store) -> None:
    rules = Rules(mode=Mode.ENFORCE, day_length=1, breaker_addresses=0)
    first = store.record([item(id="same", at=T0)], now=T0, rules=rules)[0]
    again = store.record([item(id="same", at=T0 + 5)], now=T0 + 5, rules=rules)[0]
    assert not first.duplicate
    assert again.duplicate
    assert again.score == 1
    assert not again.scored
    assert len(store.view(ADDRESS).events) == 1
    assert len(store.recent(10)) == 1
    assert store.counters()["duplicates"] == 1


def test_the_same_bounce_for_two_addresses_counts_for_each(store: Store) -> None:
    rules = Rules(mode=Mode.ENFORCE, breaker_addresses=0)
    results = store.record(
        [item("a@example.org", id="x"), item("b@example.org", id="x")], now=T0, rules=rules
    )
    assert [r.score for r in results] == [1, 1]


def test_many_threads_recording_for_one_address_give_exact_counts(store: Store) -> None:
    rules = Rules(mode=Mode.ENFORCE, rule=Rule.COUNT, count_threshold=10**6, soft_threshold=10**6,
                  breaker_addresses=0)  # fmt: skip
    threads, per_thread = 8, 40

    def work(n: int) -> None:
        for i in range(per_thread):
            effect = Effect.SOFT if i % 2 else Effect.HARD
            # Every bounce is recorded twice, as an MTA retry would: the copy must not count.
            for _ in range(2):
                store.record([item(effect=effect, id=f"t{n}-{i}", at=T0 + i)], now=T0 + i, rules=rules)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    view = store.view(ADDRESS)
    assert view.hits == threads * per_thread // 2
    assert view.soft_count == threads * per_thread // 2


def test_history_is_capped_newest_first(store: Store) -> None:
    for i in range(8):
        store.record([item(effect=Effect.NONE, at=T0 + i)], now=T0 + i, rules=ENFORCE)
    events = store.view(ADDRESS, events=50).events
    assert len(events) == 5  # history_size
    assert [e["at"] for e in events] == [T0 + i for i in range(7, 2, -1)]
    assert {
        "message_id",
        "date",
        "address",
        "kind",
        "status",
        "reason",
        "diagnostic",
        "remote_mta",
        "source",
    } <= set(events[0])


def test_all_keys_of_an_address_share_one_cluster_slot(store: Store) -> None:
    names = [
        *store.keys.record_keys("o'brien+x@example.org", "abc"),
        *store.keys.admin_keys("o'brien+x@example.org"),
    ]
    assert len({key_slot(n.encode()) for n in names}) == 1
    assert store.keys.parse_address(names[0]) == "o'brien+x@example.org"


def test_circuit_breaker_freezes_scoring_for_a_domain(store: Store) -> None:
    rules = Rules(
        mode=Mode.ENFORCE, hard_threshold=1, breaker_addresses=3, breaker_window=60, breaker_freeze=3600
    )
    results = [store.record([item(f"u{i}@big.example")], now=T0 + i, rules=rules)[0] for i in range(5)]
    assert [r.disabled for r in results] == [True, True, False, False, False]
    assert [r.frozen for r in results] == [False, False, True, True, True]
    assert not store.is_suppressed("u3@big.example")
    # Another domain is not affected.
    assert store.record([item("u@small.example")], now=T0 + 9, rules=rules)[0].disabled
    assert "big.example" in store.frozen_domains()
    assert [f["kind"] for _, f in store.recent(50)].count("breaker") == 1


def test_admin_disable_enable_reset_with_audit_events(store: Store) -> None:
    store.record([item(effect=Effect.SOFT)], now=T0, rules=ENFORCE)
    audit = Event(at=T0 + 1, kind=EventKind.DISABLED, source=Source.CLI, address=ADDRESS, note="admin")
    assert store.admin(ADDRESS, "disable", audit, state=State.DISABLED_ADMIN) == (
        State.ACTIVE,
        State.DISABLED_ADMIN,
    )
    assert store.is_suppressed(ADDRESS)
    track = store.keys.address(ADDRESS, k.TRACK)
    assert store._client.ttl(track) == -1  # a disabled address keeps its history as long as its state
    enable = Event(at=T0 + 2, kind=EventKind.ENABLED, source=Source.CLI, address=ADDRESS)
    assert store.admin(ADDRESS, "enable", enable) == (State.DISABLED_ADMIN, State.ACTIVE)
    assert store._client.ttl(track) > 0
    view = store.view(ADDRESS)
    assert (view.state, view.soft_count) == (State.ACTIVE, 0)
    assert [e["kind"] for e in view.events] == ["enabled", "disabled", "temporary"]


def test_listing_finds_tracked_addresses(store: Store) -> None:
    for n in range(30):
        store.record([item(f"user{n}@example.org", effect=Effect.SOFT)], now=T0, rules=ENFORCE)
    assert sorted(store.addresses()) == sorted(f"user{n}@example.org" for n in range(30))


def test_token_round_trip_with_ttl(store: Store) -> None:
    store.put_token("abc123", {"recipients": "a@x.org\nb@y.org", "sender": "app@z.org"}, ttl=100)
    assert store.get_token("abc123") == {"recipients": "a@x.org\nb@y.org", "sender": "app@z.org"}
    assert 0 < store._client.ttl(store.keys.token("abc123")) <= 100
    assert store.get_token("nope") is None


def test_scripts_forgotten_by_redis_are_reloaded_without_double_writes(store: Store) -> None:
    store.record([item()], now=T0, rules=ENFORCE)
    store._client.script_flush()
    r = store.record([item(at=T0 + DAY)], now=T0 + DAY, rules=ENFORCE)[0]
    assert r.score == 2
    assert len(store.recent(10)) == 2


def test_store_unavailable_when_redis_is_down(redis_db: RedisServer) -> None:
    s = Store.from_settings(
        RedisSettings(url=redis_db.url, socket_timeout=0.5, connect_timeout=0.5, retries=1)
    )
    s.record([item()], now=T0, rules=ENFORCE)
    redis_db.stop()
    with pytest.raises(StoreUnavailable):
        s.record([item()], now=T0, rules=ENFORCE)
    with pytest.raises(StoreUnavailable):
        s.is_suppressed(ADDRESS)
    with pytest.raises(StoreUnavailable):
        s.view(ADDRESS)
    with pytest.raises(StoreUnavailable):  # the notifier's keys, which /metrics and the report read
        Outbox(s).depth()
    with pytest.raises(StoreUnavailable):
        Outbox(s).delivery_counts()
    redis_db.start()
    assert s.record([item(at=T0 + DAY)], now=T0 + DAY, rules=ENFORCE)[0].score == 1  # --save "": data gone
    s.close()


def test_store_unavailable_when_nothing_listens() -> None:
    s = Store.from_settings(RedisSettings(url="redis://127.0.0.1:1/0", connect_timeout=0.2, retries=0))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        s.ping()
    # What probes and `bouncekeeper health` read and write, through the store's own methods now.
    with pytest.raises(StoreUnavailable):
        s.probes(ADDRESS, 10)
    with pytest.raises(StoreUnavailable):
        s.add_probe(ADDRESS, "{}", keep=10)
    with pytest.raises(StoreUnavailable):
        Outbox(s).backlog()
    assert time.monotonic() - started < 5
    assert isinstance(StoreUnavailable("x"), Exception)
    assert not isinstance(StoreUnavailable("x"), redis.RedisError)


def test_history_can_be_switched_off(redis_db: RedisServer) -> None:
    s = Store.from_settings(RedisSettings(url=redis_db.url, history_size=0))
    s.record([item()], now=T0, rules=ENFORCE)
    assert s.view(ADDRESS).hard_score == 1
    assert s.view(ADDRESS).events == []
    assert s._client.get(s.keys.address(ADDRESS, k.TRACK)) == f"1\t{ENFORCE.day(T0)}"  # the score alone
    assert len(s.recent(5)) == 1
    s.close()


def test_raw_bounce_kept_only_when_configured(open_store: OpenStore) -> None:
    off = open_store()
    off.record([item(id="r1")], now=T0, rules=ENFORCE, raw=b"raw bounce")
    assert not off._client.exists(off.keys.raw("r1"))
    on = open_store(raw_days=2, raw_max_bytes=3)
    (result,) = on.record([item(id="r2")], now=T0, rules=ENFORCE, raw=b"raw bounce")
    assert result.score == 1  # recorded in the same pipeline as the raw bounce
    assert on._client.get(on.keys.raw("r2")) == "raw"
    assert 0 < on._client.ttl(on.keys.raw("r2")) <= 2 * 86_400
    (again,) = on.record([item(id="r2")], now=T0, rules=ENFORCE, raw=b"another")
    assert again.duplicate
    assert on._client.get(on.keys.raw("r2")) == "raw"  # a duplicate keeps its first delivery's copy


def test_views_read_many_addresses_in_batches(store: Store) -> None:
    addresses = [f"user{n}@example.org" for n in range(23)]
    for n, address in enumerate(addresses):
        for _ in range(n % 3):
            store.record([item(address, effect=Effect.SOFT)], now=T0, rules=ENFORCE)
    views = list(store.views(addresses, batch=5))
    assert [v.address for v in views] == addresses
    assert [v.soft_count for v in views] == [n % 3 for n in range(23)]


class CountingConnection(redis.UnixDomainSocketConnection):
    writes = 0

    def send_packed_command(self, command: object, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]  # unannotated in redis-py


def test_one_round_trip_per_bounce_on_a_single_server(redis_db: RedisServer) -> None:
    pool = redis.ConnectionPool(
        connection_class=CountingConnection, path=str(redis_db.socket), decode_responses=True
    )
    s = Store(redis.Redis(connection_pool=pool), RedisSettings())
    rules = Rules(mode=Mode.ENFORCE, hard_threshold=3, breaker_addresses=100)
    s.record([item()], now=T0, rules=rules)  # connection opened, scripts loaded
    CountingConnection.writes = 0
    for day in range(1, 5):  # including the bounce that disables the address
        s.record([item(at=T0 + day * DAY)], now=T0 + day * DAY, rules=rules)
    assert CountingConnection.writes == 4
    CountingConnection.writes = 0
    s.record([item("a@x.example"), item("b@y.example")], now=T0, rules=rules)  # two addresses, one pipeline
    assert CountingConnection.writes == 1
    s.close()
    kept = Store(redis.Redis(connection_pool=pool), RedisSettings(raw_days=1))
    CountingConnection.writes = 0
    kept.record([item(id="raw1")], now=T0, rules=rules, raw=b"raw bounce")  # the raw bounce rides along
    assert CountingConnection.writes == 1
    assert kept._client.exists(kept.keys.raw("raw1"))
    kept.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 400)), min_size=1, max_size=30))
def test_lua_breaker_matches_the_pure_policy(store: Store, steps: list[tuple[int, int]]) -> None:
    rules = Rules(mode=Mode.ENFORCE, hard_threshold=10**6, breaker_addresses=3, breaker_window=600,
                  breaker_freeze=1000)  # fmt: skip
    store._client.flushall()
    model = Breaker()
    now = T0
    for who, gap in steps:
        now += gap
        if model.open_until is not None and not model.is_open(now):
            store._client.delete(store.keys.frozen("d.example"))  # its TTL, on the synthetic clock
        expected = trip(model, f"u{who}@d.example", now, rules)
        model = expected.breaker
        got = store.record([item(f"u{who}@d.example", at=now)], now=now, rules=rules)[0]
        assert got.frozen == expected.open
    opened = sum(1 for _, f in store.recent(200) if f["kind"] == "breaker")
    assert opened == store.counters().get("breaker:opened", 0)


def test_store_unavailable_when_no_cluster_node_answers() -> None:
    redis_settings = RedisSettings(url="redis+cluster://127.0.0.1:1", connect_timeout=0.2, retries=0)
    with pytest.raises(StoreUnavailable):
        Store.from_settings(redis_settings)
    # A Cluster client connects as it is made: connect() and attach() say StoreUnavailable too, not
    # redis-py's RedisClusterException.
    settings = config.Settings(redis=redis_settings)
    with pytest.raises(StoreUnavailable):
        connect(settings)
    with pytest.raises(StoreUnavailable):
        attach(settings)


class RoundTrips:
    """Counts round trips as a client waits on them: a write after a reply (on any connection) starts
    one. A Cluster pipeline writes to every node it needs before it reads any reply, so a pipeline
    spread over three masters is one round trip, as its latency is."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.reading = True
        send, read = redis.Connection.send_packed_command, redis.Connection.read_response

        def counting_send(conn: redis.Connection, *args: Any, **kwargs: Any) -> Any:
            if self.reading:
                self.count += 1
                self.reading = False
            return send(conn, *args, **kwargs)  # type: ignore[no-untyped-call]  # unannotated in redis-py

        def counting_read(conn: redis.Connection, *args: Any, **kwargs: Any) -> Any:
            self.reading = True
            return read(conn, *args, **kwargs)

        monkeypatch.setattr(redis.Connection, "send_packed_command", counting_send)
        monkeypatch.setattr(redis.Connection, "read_response", counting_read)


def test_two_round_trips_per_bounce_on_a_cluster(
    redis_cluster: RedisClusterServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store.from_settings(RedisSettings(url=redis_cluster.url))
    s._client.flushall()
    assert s.cluster
    rules = Rules(mode=Mode.ENFORCE, hard_threshold=3, breaker_addresses=100)
    s.record([item()], now=T0, rules=rules)  # connections opened, scripts loaded on every node
    s.record([item("a@x.example"), item("b@y.example")], now=T0, rules=rules)

    counter = RoundTrips(monkeypatch)

    def trips(*items: Item, at: float) -> int:
        counter.count = 0
        s.record(list(items), now=at, rules=rules)
        return counter.count

    assert trips(item(at=T0 + DAY), at=T0 + DAY) == 2
    assert trips(item(effect=Effect.SOFT, at=T0 + DAY), at=T0 + DAY) == 2
    assert trips(item(effect=Effect.NONE, at=T0 + DAY), at=T0 + DAY) == 2
    assert trips(item("a@x.example", at=T0 + DAY), item("b@y.example", at=T0 + DAY), at=T0 + DAY) == 2
    # Only the bounce that disables an address pays a third, for the `disabled` stream entry.
    assert trips(item(at=T0 + 2 * DAY), at=T0 + 2 * DAY) == 3
    assert s.is_suppressed(ADDRESS)
    assert trips(item(at=T0 + 3 * DAY), at=T0 + 3 * DAY) == 2
    s.close()


def test_the_redis_py_internals_of_the_cluster_wait_are_there(
    redis_cluster: RedisClusterServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store/batch.py's Cluster WAIT reads redis-py internals that have no public API: a redis-py that
    drops or renames one fails here, not as a 451 for every bounce of a cluster with wait_replicas."""
    s = Store.from_settings(RedisSettings(url=redis_cluster.url))
    try:
        assert batch.missing_internals(s._client) == []
        pipe = s._pipeline()
        pipe.set("{x}a", "1")
        pipe.get("{x}b")
        assert [c.args[0] for c in batch.queued(pipe)] == ["SET", "GET"]
        pipe.reset()
        # And the check sees one go.
        monkeypatch.delattr(type(s._client.nodes_manager), "_request_refresh")
        assert batch.missing_internals(s._client) == ["NodesManager._request_refresh"]
    finally:
        s.close()


def test_history_keeps_short_lines_and_the_view_joins_the_stream_entry(store: Store) -> None:
    diagnostic = "smtp; 550 5.1.1\tno such\nuser " + "x" * 300
    note = "a note\twith a tab " + "n" * 100
    event = dataclasses.replace(item().event, diagnostic=diagnostic, client="192.0.2.7", note=note)
    store.record([Item(ADDRESS, Effect.HARD, event)], now=T0, rules=ENFORCE)
    key = store.keys.address(ADDRESS, k.TRACK)
    assert store._client.type(key) == "string"
    value = store._client.get(key)
    header, line = value.split("\n")
    assert header == f"1\t{ENFORCE.day(T0)}"
    # Only what explains the state: no address (the key has it), no Message-ID, diagnostic or client.
    for absent in (ADDRESS, "m1@example.net", "no such", "192.0.2.7", "mx.example.org"):
        assert absent not in line
    ((stream_id, streamed),) = store.recent(1)
    assert stream_id in line.split("\t")
    (entry,) = store.view(ADDRESS).events
    assert entry["ref"] == stream_id
    assert (entry["diagnostic"], entry["note"], entry["client"]) == (diagnostic, note, "192.0.2.7")
    assert (entry["message_id"], entry["remote_mta"]) == ("<m1@example.net>", "mx.example.org")
    assert entry["address"] == ADDRESS
    assert entry["date"] == "2025-11-22T00:00:00Z"
    assert (entry["scored"], entry["score"], entry["soft"], entry["state"]) == (True, 1, 0, "active")
    assert "trimmed" not in entry
    assert "context" not in entry  # empty fields are left out
    assert streamed["diagnostic"] == diagnostic

    # Trimmed from the stream: the history's own fields stay, and the entry says the rest is gone.
    store._client.xtrim(store.keys.stream, maxlen=0)
    (entry,) = store.view(ADDRESS).events
    assert entry["trimmed"] is True
    assert (entry["kind"], entry["status"], entry["reason"], entry["scored"]) == (
        "permanent",
        "5.1.1",
        "userunknown",
        True,
    )
    assert entry["note"] == note.replace("\t", " ")[:80]
    assert "diagnostic" not in entry


def test_duplicates_leave_one_stream_entry_and_one_history_line(store: Store) -> None:
    for _ in range(3):
        store.record([item(id="dup")], now=T0, rules=ENFORCE)
    assert len(store.recent(10)) == 1
    (entry,) = store.view(ADDRESS).events
    assert entry["id"] == "dup"


def test_a_live_score_keeps_its_reset_time_while_other_events_arrive(store: Store) -> None:
    rules = Rules(mode=Mode.ENFORCE, quiet=3, breaker_addresses=0)
    now = time.time()
    store.record([item(at=now)], now=now, rules=rules)
    time.sleep(1.1)
    # The same day: no rise, so the quiet period still runs from the first bounce.
    store.record([item(effect=Effect.NONE, at=now + 1)], now=now + 1, rules=rules)
    store.record([item(at=now + 1)], now=now + 1, rules=rules)
    view = store.view(ADDRESS)
    assert view.hard_score == 1
    assert view.hard_ttl is not None
    assert view.hard_ttl <= 2
    assert len(view.events) == 3


def test_history_alone_lives_history_days(store: Store) -> None:
    store.record([item(effect=Effect.NONE)], now=T0, rules=ENFORCE)
    key = store.keys.address(ADDRESS, k.TRACK)
    assert store._client.get(key).startswith("0\t\n")  # no live score
    assert 89 * DAY < store._client.ttl(key) <= 90 * DAY
    assert store.view(ADDRESS).hard_ttl is None


def test_admin_acts_keep_the_history_while_disabled_and_clear_the_score_on_enable(store: Store) -> None:
    rules = Rules(mode=Mode.ENFORCE, quiet=1000, breaker_addresses=0)
    store.record([item()], now=T0, rules=rules)
    key = store.keys.address(ADDRESS, k.TRACK)
    audit = Event(at=T0 + 1, kind=EventKind.DISABLED, source=Source.CLI, address=ADDRESS, note="by admin")
    store.admin(ADDRESS, "disable", audit, state=State.DISABLED_ADMIN)
    assert store._client.ttl(key) == -1  # disabled: the history stays with the state
    view = store.view(ADDRESS)
    assert view.hard_score == 1
    assert view.events[0]["note"] == "by admin"
    assert view.events[0]["previous"] == "active"
    assert "ref" in view.events[0]
    assert "trimmed" not in view.events[0]
    store.admin(
        ADDRESS, "enable", Event(at=T0 + 2, kind=EventKind.ENABLED, source=Source.CLI, address=ADDRESS)
    )
    assert store._client.get(key).startswith("0\t\n")
    assert store._client.ttl(key) > 1000  # history_days now


def test_a_store_of_the_earlier_layout_is_read_and_its_score_moved(store: Store) -> None:
    hard = store.keys.address(ADDRESS, k.LEGACY_HARD)
    history = store.keys.address(ADDRESS, k.LEGACY_HISTORY)
    day = ENFORCE.day(T0)
    store._client.hset(hard, mapping={"score": 3, "day": day - 1})
    store._client.expire(hard, 5000)
    old_line = "\t".join([repr(T0 - DAY), "permanent", "milter", "old1", "<old@example.net>", "5.1.1",
                          "userunknown", "smtp; 550 no such user", "", "", "", "", "", "hard", "",
                          "1", "active", "3", "0"])  # fmt: skip
    store._client.set(history, old_line, ex=5000)
    view = store.view(ADDRESS)
    assert (view.hard_score, view.hard_day) == (3, day - 1)
    assert view.hard_ttl is not None
    assert 4990 < view.hard_ttl <= 5000
    (old,) = view.events
    assert (old["message_id"], old["diagnostic"], old["score"]) == (
        "<old@example.net>",
        "smtp; 550 no such user",
        3,
    )
    # The next event moves the score into the track key, keeping its reset time when it does not rise.
    store.record([item(effect=Effect.NONE)], now=T0, rules=ENFORCE)
    assert not store._client.exists(hard)
    view = store.view(ADDRESS)
    assert view.hard_score == 3
    assert view.hard_ttl is not None
    assert 4990 < view.hard_ttl <= 5000
    assert [e["kind"] for e in view.events] == ["autoreply", "permanent"]  # new lines, then the old
    assert store.record([item()], now=T0, rules=ENFORCE)[0].score == 4


def test_a_verp_id_scores_an_address_once_however_often_replayed(store: Store) -> None:
    rules = dataclasses.replace(ENFORCE, rule=Rule.COUNT, count_threshold=2, replay_window=60)
    replayed = [dataclasses.replace(item(at=T0 + n), verp_id="v1") for n in range(3)]
    results = [store.record([i], now=T0 + n, rules=rules)[0] for n, i in enumerate(replayed)]
    assert [(r.duplicate, r.scored, r.score) for r in results] == [(False, True, 1), *[(False, False, 1)] * 2]
    assert results[1].why == "this VERP address already scored for this address"
    # Another signed address (another day's mail) scores; the first one again after its window.
    other = dataclasses.replace(item(at=T0 + 5), verp_id="v2")
    assert store.record([other], now=T0 + 5, rules=rules)[0].disabled
    assert 0 < store._client.ttl(store.keys.replay(ADDRESS, "v1")) <= 60


def test_a_failure_that_is_not_authentic_obeys_the_breaker_but_never_opens_it(store: Store) -> None:
    rules = Rules(mode=Mode.ENFORCE, hard_threshold=10**6, breaker_addresses=3, breaker_window=600)
    loose = [dataclasses.replace(item(f"u{n}@d.example"), authentic=False) for n in range(5)]
    results = store.record(loose, now=T0, rules=rules)
    assert all(r.scored and not r.frozen for r in results)
    assert not store.frozen_domains()
    authentic = [item(f"a{n}@d.example") for n in range(3)]
    assert [r.frozen for r in store.record(authentic, now=T0 + 2, rules=rules)] == [False, False, True]
    later = dataclasses.replace(item("u9@d.example"), authentic=False)
    (result,) = store.record([later], now=T0 + 3, rules=rules)
    assert result.frozen
    assert not result.scored


def test_an_event_keeps_each_field_within_its_limit_and_no_control_characters() -> None:
    huge = '"\\\u202e\x1b\x00é' * 20_000
    event = Event(
        at=T0, kind=EventKind.PERMANENT, source=Source.LMTP,
        **{name: huge for name in FIELD_MAX if name not in ("effect",)},
        effect="none",
    )  # fmt: skip
    for name, limit in FIELD_MAX.items():
        value = getattr(event, name)
        assert len(value.encode()) <= limit
        assert not set(value) & {"\u202e", "\x1b", "\x00"}
    assert len(event.to_json().encode()) <= ENTRY_MAX_BYTES
    # Short printable values are kept as they are, tabs and newlines of a diagnostic too.
    plain = Event(at=T0, kind=EventKind.PERMANENT, source=Source.LMTP, diagnostic="smtp; 550\n\tno 5.1.1 é")
    assert plain.diagnostic == "smtp; 550\n\tno 5.1.1 é"
