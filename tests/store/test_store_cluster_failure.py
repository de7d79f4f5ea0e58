"""A Redis Cluster master dies mid-run: what the store does, against a private three-master cluster.

Private (not the session's `redis_cluster`) because its masters are killed, and because it runs with
`cluster-node-timeout 1000` so the other masters notice the death within the test (the default, 15 s,
is what a production cluster has). No replicas: nothing takes over the dead master's slots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import redis

from bouncekeeper.config import RedisSettings
from bouncekeeper.core.scoring import DAY
from bouncekeeper.store import Store, StoreUnavailable
from bouncekeeper.store import keys as k
from tests.store.test_store import ENFORCE, T0, item
from tests.support.redis_cluster import RedisClusterServers

ADDRESSES = [f"u{n}@example.org" for n in range(12)]


# Every attempt is bounded by these: (connect + socket timeout) * (retries + 1) = 2 s at most.
def _settings(cluster: RedisClusterServers) -> RedisSettings:
    return RedisSettings(url=cluster.url, socket_timeout=0.5, connect_timeout=0.5, retries=1)


BOUND = 5.0  # seconds: the bound above with room for a loaded machine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(
        tmp_path_factory.mktemp("dying-cluster"), extra=("--cluster-node-timeout", "1000")
    )
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


def _owner(store: Store, key: str) -> int:
    port: int = store._client.get_node_from_key(key).port
    return port


def _record(store: Store, address: str, day: int) -> int | str:
    """The score after one more hard bounce, or "unavailable"; fails the test if that took too long."""
    started = time.monotonic()
    try:
        return store.record([item(address, at=T0 + day * DAY)], now=T0 + day * DAY, rules=ENFORCE)[0].score
    except StoreUnavailable:
        return "unavailable"
    finally:
        assert time.monotonic() - started < BOUND


def _cluster_state(cluster: RedisClusterServers, n: int) -> str:
    state: str = redis.Redis(port=cluster.ports[n]).cluster("info")["cluster_state"]
    return state


def test_a_dead_master_fails_its_slots_only_until_the_cluster_marks_it_failed(
    cluster: RedisClusterServers, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.from_settings(_settings(cluster))
    store._client.flushall()
    globals_at = {_owner(store, store.keys.stream), _owner(store, store.keys.stats)}
    victim = next(n for n, port in enumerate(cluster.ports) if port not in globals_at)
    dead = {a for a in ADDRESSES if _owner(store, store.keys.address(a, k.TRACK)) == cluster.ports[victim]}
    assert dead
    assert dead != set(ADDRESSES)
    assert [_record(store, a, 0) for a in ADDRESSES] == [1] * len(ADDRESSES)

    cluster.kill(victim)
    # At once: the dead master's addresses are unavailable (451 for their bounces), the others record.
    assert [_record(store, a, 1) for a in ADDRESSES] == ["unavailable" if a in dead else 2 for a in ADDRESSES]

    # Once the survivors mark it failed, Redis's default cluster-require-full-coverage makes them refuse
    # every slot: every bounce is unavailable, as an outage (not logged as a script error).
    survivor = next(n for n in range(3) if n != victim)
    deadline = time.monotonic() + 10
    while _cluster_state(cluster, survivor) != "fail":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert {_record(store, a, 2) for a in ADDRESSES} == {"unavailable"}
    assert not caplog.records

    cluster.restart(victim)
    # Back: recording works everywhere again. The restarted master kept its slots but not its data
    # (no persistence in this test), so its addresses start again at 1.
    assert [_record(store, a, 3) for a in ADDRESSES] == [1 if a in dead else 3 for a in ADDRESSES]
    store.close()


def _node_timeout(cluster: RedisClusterServers, milliseconds: int) -> None:
    for port in cluster.ports:
        with redis.Redis(host="127.0.0.1", port=port) as node:
            node.config_set("cluster-node-timeout", milliseconds)


def test_the_master_holding_the_global_stream_stops_every_bounce(cluster: RedisClusterServers) -> None:
    store = Store.from_settings(_settings(cluster))
    store._client.flushall()
    # This test reads the live masters while one is dead: with the module's 1 s node timeout a loaded
    # machine let the cluster declare itself down mid-test (CLUSTERDOWN on every read, as the test above
    # shows). A production-like timeout keeps the window open for the whole test.
    _node_timeout(cluster, 15000)
    victim = cluster.ports.index(_owner(store, store.keys.stream))
    elsewhere = [
        a for a in ADDRESSES if _owner(store, store.keys.address(a, k.TRACK)) != cluster.ports[victim]
    ]
    assert elsewhere
    assert {_record(store, a, 0) for a in elsewhere} == {1}

    cluster.kill(victim)
    # Every bounce writes its event to bk:events, so none can be recorded, whatever its address's slot.
    assert {_record(store, a, 1) for a in elsewhere} == {"unavailable"}
    # What a bounce did not record did not count: on the live masters the scores did not move. An
    # address's view still answers, its events without the details the stream holds.
    views = [store.view(a) for a in elsewhere]
    assert {v.hard_score for v in views} == {1}
    assert all(e["stream_unavailable"] and "diagnostic" not in e for v in views for e in v.events)
    assert {e["reason"] for v in views for e in v.events} == {"userunknown"}

    cluster.restart(victim)
    _node_timeout(cluster, 1000)
    assert {_record(store, a, 2) for a in elsewhere} == {2}
    # The restarted master lost the stream (no persistence here): the earlier events' details are gone.
    (latest, earlier, *_) = store.view(elsewhere[0]).events
    assert "diagnostic" in latest
    assert earlier["trimmed"]
    store.close()
