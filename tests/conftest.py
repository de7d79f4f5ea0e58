"""Fixtures shared across the suite: real servers, started and stopped by the tests themselves."""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Iterator

import hypothesis
import pytest

from bouncekeeper import log
from tests.support.dovecot import Dovecot
from tests.support.redis_cluster import RedisClusterServers
from tests.support.redis_server import RedisServer

# Hypothesis's 200 ms per-example deadline measures the machine's load, not our code: CI shares two
# cores with real MTAs started by other tests. Speed is the benchmarks' business, not the suite's.
hypothesis.settings.register_profile(
    "bouncekeeper",
    deadline=None,
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile("bouncekeeper")


@pytest.fixture(autouse=True)
def fresh_cut_lines() -> None:
    """Each test starts with an empty budget of lines about cuts (log.QueueIdAdapter.cut): the table
    is the process's, and lines an earlier test caused must not hold back the ones this test reads."""
    log.cut_lines.configure()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session; tests that need isolation use `redis_db`."""
    # A short path: unix socket paths are limited to 108 bytes and pytest's tmp dirs are long.
    with tempfile.TemporaryDirectory(prefix="bk-redis-") as directory:
        server = RedisServer(pathlib.Path(directory))
        server.start()
        yield server
        server.stop()


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, emptied before the test; restarted first if a test stopped it."""
    if redis_server.proc is None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    client.close()
    yield redis_server
    if redis_server.proc is None:
        redis_server.start()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three masters for the session (tests/support/redis_cluster.py)."""
    with tempfile.TemporaryDirectory(prefix="bk-cluster-") as directory:
        cluster = RedisClusterServers(pathlib.Path(directory))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One Dovecot IMAP server for the session (tests/support/dovecot.py); each test module scans its own
    folders of the one mailbox."""
    with tempfile.TemporaryDirectory(prefix="bk-dovecot-") as directory:
        server = Dovecot(pathlib.Path(directory)).start()
        yield server
        server.stop()
