"""The store tests' shared fixture: a Store on one redis-server and on the three-master Cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from bouncekeeper.config import RedisSettings
from bouncekeeper.store import Store


class OpenStore(Protocol):
    """Opens a Store on the test's Redis, emptied, with these RedisSettings beside the URL."""

    def __call__(self, **settings: Any) -> Store: ...


@pytest.fixture(params=["single", "cluster"])
def open_store(request: pytest.FixtureRequest) -> Iterator[OpenStore]:
    """Each test taking it runs on both: the session's redis-server, then its Redis Cluster."""
    url = request.getfixturevalue("redis_db" if request.param == "single" else "redis_cluster").url
    opened: list[Store] = []

    def open_(**settings: Any) -> Store:
        s = Store.from_settings(RedisSettings(url=url, **settings))
        s._client.flushall()
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()
