"""The embedded default: no [redis] url, bouncekeeper runs its own redis-server under state_dir."""

from __future__ import annotations

import os
import pathlib
import signal
import tempfile
import time
from collections.abc import Iterator

import pytest

from bouncekeeper import config
from bouncekeeper.core.scoring import Effect, Mode, Rules
from bouncekeeper.store import EmbeddedRedis, connect
from bouncekeeper.store.event import Event, EventKind, Source
from bouncekeeper.store.model import Item

T0 = 1_763_769_600.0
RULES = Rules(mode=Mode.ENFORCE, breaker_addresses=0)


def _settings(state_dir: pathlib.Path, **redis: object) -> config.Settings:
    # The suite runs as root; a development checkout may let root start the server.
    return config.Settings(
        state_dir=str(state_dir),
        redis=config.RedisSettings(embedded_as_root=True, **redis),  # type: ignore[arg-type]
    )


@pytest.fixture
def state_dir() -> Iterator[pathlib.Path]:
    # Short: the unix socket path lives under it.
    with tempfile.TemporaryDirectory(prefix="bk-state-") as directory:
        yield pathlib.Path(directory)


def record(store: object, n: int) -> int:
    event = Event(at=T0, kind=EventKind.PERMANENT, source=Source.CLI, address="a@example.org", id=f"e{n}")
    (result,) = store.record([Item("a@example.org", Effect.HARD, event)], now=T0 + n * 86_400, rules=RULES)  # type: ignore[attr-defined]
    score: int = result.score
    return score


def test_counters_survive_a_restart_of_the_embedded_server(state_dir: pathlib.Path) -> None:
    settings = _settings(state_dir)
    store = connect(settings)
    assert record(store, 0) == 1
    assert record(store, 1) == 2
    store.close()  # stops the redis-server this process started (SIGTERM: it writes the AOF out)
    assert not EmbeddedRedis(state_dir, allow_root=True).alive()
    assert (state_dir / "redis" / "appendonlydir").is_dir()

    store = connect(settings)
    assert store.view("a@example.org").hard_score == 2
    assert record(store, 2) == 3
    store.close()


def test_a_second_process_attaches_instead_of_starting_another(state_dir: pathlib.Path) -> None:
    first = EmbeddedRedis(state_dir, allow_root=True)
    first.start()
    try:
        second = EmbeddedRedis(state_dir, allow_root=True)
        second.start()
        assert not second.owner  # the lock says someone supervises: only attach
        assert second.alive()
        second.stop()
        assert first.alive()  # the attached one's stop() leaves the server alone
    finally:
        first.stop()
    assert not first.alive()


def test_supervisor_restarts_a_redis_server_that_died(state_dir: pathlib.Path) -> None:
    settings = _settings(state_dir)
    store = connect(settings, supervise=True)
    try:
        assert record(store, 0) == 1
        time.sleep(1.2)  # appendfsync everysec
        embedded = EmbeddedRedis(state_dir, allow_root=True)
        pid = int(store._client.info("server")["process_id"])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not embedded.alive():
            assert time.monotonic() < deadline, "not restarted"
            time.sleep(0.05)
        assert int(store._client.info("server")["process_id"]) != pid
        assert store.view("a@example.org").hard_score == 1  # replayed from the append-only file
    finally:
        store.close()


def test_an_orphaned_server_is_adopted_not_duplicated(state_dir: pathlib.Path) -> None:
    # A supervisor killed with SIGKILL leaves its redis-server running (it has its own session).
    orphan = EmbeddedRedis(state_dir, allow_root=True)
    orphan.start()
    proc = orphan.proc
    assert proc is not None
    orphan.proc = None
    orphan.stop()  # releases the lock only: the server keeps running, as after a SIGKILL
    try:
        adopter = EmbeddedRedis(state_dir, allow_root=True)
        adopter.start()
        assert adopter.alive()
        assert not adopter.owner
        adopter.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_fsync_always_is_passed_to_the_server(state_dir: pathlib.Path) -> None:
    store = connect(_settings(state_dir, embedded_fsync="always"))
    try:
        assert store._client.config_get("appendfsync") == {"appendfsync": "always"}
        assert store._client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal concerns root")
def test_root_does_not_start_the_embedded_server_but_attaches_to_a_running_one(
    state_dir: pathlib.Path,
) -> None:
    with pytest.raises(config.ConfigError) as info:
        connect(config.Settings(state_dir=str(state_dir)))
    assert info.value.key == "redis.url"
    assert "root does not start one" in info.value.problem
    assert not (state_dir / "redis" / "redis.sock").exists()
    # The daemons' server (started here with the development permission): root's CLI may use it.
    daemons = connect(_settings(state_dir), supervise=True)
    try:
        cli = connect(config.Settings(state_dir=str(state_dir)))
        assert record(cli, 0) == 1
        cli.close()
        assert daemons.view("a@example.org").hard_score == 1
    finally:
        daemons.close()
