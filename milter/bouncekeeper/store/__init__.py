"""Bounce state in Redis.

`connect(settings)` gives a Store: on the configured `[redis] url`, or, when it is empty, on the embedded
redis-server that bouncekeeper runs under `state_dir` (store/embedded.py).
"""

from __future__ import annotations

from bouncekeeper.config import Settings
from bouncekeeper.store.embedded import EmbeddedRedis
from bouncekeeper.store.errors import StoreUnavailable
from bouncekeeper.store.redis_store import Store, make_client


def connect(settings: Settings, *, supervise: bool = False) -> Store:
    """A Store for these settings. With no URL, attach to (or start) the embedded redis-server; with
    `supervise` (the daemons) it is restarted if it dies. `Store.close()` stops a server it started."""
    if settings.redis.url:
        return Store.from_settings(settings.redis)
    embedded = EmbeddedRedis(settings.state_dir, fsync=settings.redis.embedded_fsync)
    embedded.start(supervise=supervise)
    try:
        return Store(make_client(settings.redis, embedded.url), settings.redis, on_close=embedded.stop)
    except Exception:
        embedded.stop()
        raise


__all__ = ["EmbeddedRedis", "Store", "StoreUnavailable", "connect"]
