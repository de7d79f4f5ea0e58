"""Redis fails over during traffic: bounces through the real LMTP listener, the master SIGKILLed.

Sentinel: a master, two replicas, three sentinels on loopback (tests/support/redis_sentinel.py), with
`wait_replicas = 1`: a bounce is acknowledged once a replica holds it, so the replica the sentinels
promote has every acknowledged bounce. Two replicas, because with one the promoted master would have
none left to WAIT for, and every bounce would wait in the MTA's queue until the old master came back.
No bounce is lost: each is answered 451 while there is no master and recorded, once, after the failover.
Ordinary mail does not wait meanwhile: the milter never asks Redis about it.

Cluster: three masters with two replicas each (tests/support/redis_cluster.py), cluster-node-timeout
1 s, `wait_replicas = 1`: the store WAITs on each master a bounce writes to, on the connection that
carried the writes. The master holding the global event stream (which every bounce writes) is killed, so
every bounce waits until a replica has taken the slots over; the other replica follows the new master,
which so has one to WAIT for (with one replica each it would have none, and every bounce would wait in
the MTA's queue until the old master came back).
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import Milter
import pytest
import redis

from bouncekeeper import config
from bouncekeeper.config import RedisSettings
from bouncekeeper.core.scoring import DAY
from bouncekeeper.service.bounces import Service
from bouncekeeper.store import Store, StoreUnavailable, connect
from bouncekeeper.store.event import Event, EventKind, Source
from tests.store.test_store import ENFORCE, T0, RoundTrips, item
from tests.support import failover
from tests.support.http_receiver import Receiver
from tests.support.lmtp import ListenerThread, settings_for
from tests.support.milter_harness import INBOUND_IP
from tests.support.milter_harness import Harness as MilterHarness
from tests.support.notify_process import NotifyProcess
from tests.support.redis_cluster import RedisClusterServers, free_port
from tests.support.redis_sentinel import RedisSentinels
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

BOUNCES = 60
RCPTS = [f"user{n}@example.org" for n in range(BOUNCES)]
WAIT = "wait_replicas = 1\nwait_timeout = 0.3"


@pytest.fixture
def sentinels() -> Iterator[RedisSentinels]:
    with tempfile.TemporaryDirectory(prefix="bk-sentinel-") as directory:
        servers = RedisSentinels(pathlib.Path(directory), replicas=2)
        try:
            servers.start()
            yield servers
        finally:
            servers.stop()


def _ordinary(milter: MilterHarness) -> int:
    """The milter's answer to an ordinary inbound message's first recipient (it never asks Redis)."""
    milter.connect(INBOUND_IP)
    milter.ctx._envfrom("<someone@remote.example>")
    return int(milter.ctx._envrcpt("<x@elsewhere.example>"))


def failover_probe() -> Event:
    """A stream-only event: it needs the master holding the global stream, the one the test kills."""
    return Event(at=T0, kind=EventKind.FORGED, source=Source.CLI, address="probe@example.org")


@contextlib.contextmanager
def _under_traffic(
    tmp_path: pathlib.Path, url: str
) -> Iterator[tuple[Service, ListenerThread, MilterHarness]]:
    """The failover tests' rig on `url`: the service with WAIT for one replica, its LMTP listener and a
    milter, closed again however the test ends."""
    settings = settings_for(tmp_path, url, redis=WAIT)
    service = Service.open(settings)
    listener = ListenerThread(service, settings).start()
    milter = MilterHarness(settings)
    try:
        yield service, listener, milter
    finally:
        listener.stop()
        service.close()
        milter.store.close()


def _recorded_once(service: Service, rcpts: list[str]) -> dict[str, int]:
    """Each recipient's number of events in its history (1 = recorded, once)."""
    return {view.address: len(view.events) for view in service.store.views(rcpts, events=10)}


def test_a_sentinel_failover_during_traffic_loses_no_bounce_and_counts_each_once(
    sentinels: RedisSentinels, tmp_path: pathlib.Path
) -> None:
    old = sentinels.master()
    ordinary: list[int] = []
    with _under_traffic(tmp_path, sentinels.url) as (service, listener, milter):

        def kill() -> None:
            sentinels.kill(old)
            # No master now (the sentinels need down_after_ms to notice): a bounce cannot be recorded, and
            # ordinary mail through the milter is accepted all the same.
            with pytest.raises(StoreUnavailable):
                service.store.ping()
            ordinary.append(_ordinary(milter))

        where = listener.lmtp_address
        assert isinstance(where, tuple)
        traffic = failover.run(where, RCPTS, kill, kill_after=BOUNCES // 3)
        new = sentinels.wait_for_new_master(old)
        counts = _recorded_once(service, RCPTS)
        print(failover.report("sentinel", traffic, sum(1 for c in counts.values() if c == 1)))
    assert new != old
    assert ordinary == [Milter.ACCEPT]
    assert traffic.other == []
    assert traffic.accepted == BOUNCES
    assert traffic.tempfailed > 0, "the kill came during traffic: some bounce must have waited"
    assert counts == dict.fromkeys(RCPTS, 1)


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    with tempfile.TemporaryDirectory(prefix="bk-cluster-fo-") as directory:
        servers = RedisClusterServers(
            pathlib.Path(directory), replicas=2, extra=("--cluster-node-timeout", "1000")
        )
        try:
            servers.start()
            yield servers
        finally:
            servers.stop()


def test_a_cluster_failover_during_traffic_loses_no_bounce_and_counts_each_once(
    cluster: RedisClusterServers, tmp_path: pathlib.Path
) -> None:
    ordinary: list[int] = []
    with _under_traffic(tmp_path, cluster.url) as (service, listener, milter):
        victim = int(service.store._client.get_node_from_key(service.store.keys.stream).port)
        where = listener.lmtp_address
        assert isinstance(where, tuple)

        def kill() -> None:
            cluster.kill_port(victim)
            with pytest.raises(StoreUnavailable):
                service.store.log_event(failover_probe())
            ordinary.append(_ordinary(milter))

        traffic = failover.run(where, RCPTS, kill, kill_after=BOUNCES // 3)
        counts = _recorded_once(service, RCPTS)
        print(failover.report("cluster", traffic, sum(1 for c in counts.values() if c == 1)))
        stream_owner = int(service.store._client.get_node_from_key(service.store.keys.stream).port)
    assert ordinary == [Milter.ACCEPT]
    assert stream_owner != victim
    assert cluster.role(stream_owner) == "master"
    assert traffic.other == []
    assert traffic.accepted == BOUNCES
    assert traffic.tempfailed > 0, "every bounce writes the dead master's stream: some must have waited"
    assert counts == dict.fromkeys(RCPTS, 1)


def _replica_of(cluster: RedisClusterServers, master: int) -> int:
    (port,) = (
        p
        for p in cluster.ports
        if p != master and redis.Redis(port=p).info("replication").get("master_port") == master
    )
    return port


def _on_replica(port: int) -> redis.Redis:
    """A connection that reads a Cluster replica's own data (READONLY) instead of being redirected."""
    client = redis.Redis(port=port, single_connection_client=True)
    client.execute_command("READONLY")  # type: ignore[no-untyped-call]  # unannotated in redis-py
    return client


def test_wait_replicas_on_a_cluster_waits_on_each_master_a_bounce_writes_to(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WAIT on each master, on the connection that carried its writes: once record() returns, each
    master's replica holds what that master wrote; still two round trips; a master whose replica is
    gone answers too few acknowledgements (451), and the retry after its replica is back counts once."""
    with tempfile.TemporaryDirectory(prefix="bk-cluster-wait-") as directory:
        cluster = RedisClusterServers(pathlib.Path(directory), replicas=1)
        try:
            cluster.start()
            store = Store.from_settings(_bounded(cluster.url, wait_replicas=1, wait_timeout=0.3))
            two = [item("a@example.org", at=T0), item("b@example.org", at=T0)]
            assert [r.score for r in store.record(two, now=T0, rules=ENFORCE)] == [1, 1]
            for address in ("a@example.org", "b@example.org"):
                key = store.keys.address(address, "track")
                replica = _replica_of(cluster, int(store._client.get_node_from_key(key).port))
                assert _on_replica(replica).exists(key)
            stream = _replica_of(cluster, int(store._client.get_node_from_key(store.keys.stream).port))
            assert _on_replica(stream).xlen(store.keys.stream) == 2

            counter = RoundTrips(monkeypatch)
            store.record([item("c@example.org", at=T0)], now=T0, rules=ENFORCE)
            assert counter.count == 2
            monkeypatch.undo()

            address = "d@example.org"
            master = int(store._client.get_node_from_key(store.keys.address(address, "track")).port)
            replica = _replica_of(cluster, master)
            cluster.kill_port(replica)
            bounce = [item(address, at=T0)]
            with pytest.raises(StoreUnavailable, match="0 of 1 replicas acknowledged"):
                store.record(bounce, now=T0, rules=ENFORCE)
            cluster.restart(cluster.ports.index(replica))
            (again,) = store.record(bounce, now=T0, rules=ENFORCE)
            assert again.score == 1
            assert len(store.view(address).events) == 1
            store.close()
        finally:
            cluster.stop()


def _bounded(url: str, **keys: Any) -> RedisSettings:
    return RedisSettings(url=url, socket_timeout=0.5, connect_timeout=0.5, retries=1, **keys)


def test_acl_user_and_password_files_and_a_demoted_master_is_followed_not_written(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL user on master and replicas, a password on the sentinels, both read from files; a
    coordinated failover demotes the live master: the store's open connection to it gets READONLY, and
    the store asks the sentinels again instead of failing for good or writing to the old master."""
    (tmp_path / "redis.pw").write_text("m4ster-secret\n")
    (tmp_path / "sentinel.pw").write_text("sentinel-secret\r\n")
    with tempfile.TemporaryDirectory(prefix="bk-sentinel-") as directory:
        servers = RedisSentinels(
            pathlib.Path(directory),
            username="bk",
            password="m4ster-secret",
            sentinel_password="sentinel-secret",
        )
        try:
            servers.start()
            settings = _bounded(
                servers.url,
                username="bk",
                password_file=str(tmp_path / "redis.pw"),
                sentinel_password_file=str(tmp_path / "sentinel.pw"),
            )
            store = Store.from_settings(settings)
            assert store.record([item("a@example.org", at=T0)], now=T0, rules=ENFORCE)[0].score == 1
            old = servers.master()
            servers.failover()
            new = servers.wait_for_new_master(old)
            servers._wait(lambda: servers.info(old, "replication")["role"] == "slave")
            # The pooled connection still goes to `old`: READONLY, a reconnection, the new master.
            with caplog.at_level(logging.ERROR):
                after = store.record([item("a@example.org", at=T0 + DAY)], now=T0 + DAY, rules=ENFORCE)
            assert not caplog.records
            assert after[0].score == 2
            with servers.client(new) as master:
                assert master.exists(store.keys.address("a@example.org", "track"))
            assert len(store.view("a@example.org").events) == 2
            store.close()

            # Without Sentinel, a client of the demoted master: READONLY is an outage (451), not a bug.
            plain = _bounded(
                f"redis://127.0.0.1:{old}/0", username="bk", password_file=settings.password_file
            )
            demoted = Store.from_settings(plain)
            caplog.clear()
            with caplog.at_level(logging.ERROR), pytest.raises(StoreUnavailable, match="read only replica"):
                demoted.record([item("b@example.org", at=T0)], now=T0, rules=ENFORCE)
            assert not caplog.records
            demoted.close()

            # A wrong password is unavailability too, never a crash.
            (tmp_path / "wrong.pw").write_text("nope\n")
            wrong = Store.from_settings(
                _bounded(
                    servers.url,
                    username="bk",
                    password_file=str(tmp_path / "wrong.pw"),
                    sentinel_password_file=settings.sentinel_password_file,
                )
            )
            with pytest.raises(StoreUnavailable):
                wrong.ping()
            wrong.close()
        finally:
            servers.stop()


def _replicating(replica: RedisServer) -> None:
    deadline = time.monotonic() + 30
    with replica.client() as r:
        while r.info("replication")["master_link_status"] != "up":
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.05)


def test_wait_replicas_acknowledges_a_bounce_once_a_replica_holds_it_else_tempfails(
    tmp_path: pathlib.Path,
) -> None:
    port = free_port()
    master = RedisServer(tmp_path / "master", port=port)
    replica = RedisServer(
        tmp_path / "replica", port=free_port(), extra=("--replicaof", "127.0.0.1", str(port))
    )
    master.start()
    replica.start()
    store = Store.from_settings(_bounded(master.url, wait_replicas=1, wait_timeout=0.3))
    try:
        _replicating(replica)
        # Two addresses (a pipeline), on a server that has not seen the scripts yet (NOSCRIPT, loaded,
        # sent again, with WAIT again after them).
        two = [item("a@example.org", at=T0), item("b@example.org", at=T0)]
        assert [r.score for r in store.record(two, now=T0, rules=ENFORCE)] == [1, 1]
        with replica.client() as r:
            assert r.exists(store.keys.address("b@example.org", "track"))
        assert store.record([item("c@example.org", at=T0)], now=T0, rules=ENFORCE)[0].score == 1

        replica.stop()
        # The master records it, but no replica holds it: a tempfail, and the MTA's retry counts once.
        bounce = [item("d@example.org", at=T0)]
        with pytest.raises(StoreUnavailable, match="0 of 1 replicas acknowledged"):
            store.record(bounce, now=T0, rules=ENFORCE)
        replica.start()
        _replicating(replica)
        (again,) = store.record(bounce, now=T0, rules=ENFORCE)
        assert (again.duplicate, again.score) == (True, 1)
    finally:
        store.close()
        replica.stop()
        master.stop()


def _record_all(store: Store, rcpts: list[str]) -> None:
    """A hard bounce for each, each sent again until it is recorded (an MTA's retry, without the MTA)."""
    for rcpt in rcpts:
        deadline = time.monotonic() + 30
        while True:
            try:
                store.record([item(rcpt, at=T0)], now=T0, rules=ENFORCE)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "no new master in time"
                time.sleep(0.1)


def _delivered(receiver: Receiver, notifier: NotifyProcess, addresses: set[str]) -> None:
    deadline = time.monotonic() + 30
    while not addresses <= {r.json()["address"] for r in receiver.delivered()}:
        assert time.monotonic() < deadline, notifier.log_file.read_text()[-3000:]
        assert notifier.proc is not None
        assert notifier.proc.poll() is None, notifier.log_file.read_text()[-3000:]
        time.sleep(0.1)


def test_the_notifier_follows_a_sentinel_failover_and_loses_no_outbox_event(
    sentinels: RedisSentinels, tmp_path: pathlib.Path
) -> None:
    """`bouncekeeper notify` on the Sentinel URL while the master is SIGKILLed: every hard bounce's
    outbox entry (written with WAIT 1, so the promoted replica has it) reaches the application."""
    receiver = Receiver().start()
    key = tmp_path / "app.key"
    key.write_text("app-webhook-key-0123456789abcdef\n")
    conf = tmp_path / "notify.toml"
    conf.write_text(
        f'state_dir = "{tmp_path}"\n[log]\nlevel = "WARNING"\n'
        f'[redis]\nurl = "{sentinels.url}"\nsocket_timeout = 0.5\nconnect_timeout = 0.5\nretries = 1\n'
        f"{WAIT}\n"
        '[notify]\nhard_bounces = true\nconsumer = "n1"\npoll = 0.1\nbackoff_initial = 0.05\n'
        f'[[notify.targets]]\nname = "app"\ndefault = true\nurl = "{receiver.url}/e/{{address}}"\n'
        f'secret_file = "{key}"\n'
    )
    settings = config.load(conf)
    store = connect(settings)
    notifier = NotifyProcess(conf, tmp_path / "notify.log")
    rcpts = [f"n{n}@example.org" for n in range(40)]
    try:
        notifier.start()
        _record_all(store, rcpts[:20])
        _delivered(receiver, notifier, set(rcpts[:20]))  # the notifier is running and has read them
        sentinels.kill(sentinels.master())
        _record_all(store, rcpts[20:])
        _delivered(receiver, notifier, set(rcpts))
    finally:
        notifier.stop()
        store.close()
        receiver.stop()
    sent = Counter(r.json()["address"] for r in receiver.delivered())
    # At-least-once: a request in flight, or an acknowledgement the dead master took with it, may repeat.
    assert sum(sent.values()) - len(rcpts) <= 2, sent
