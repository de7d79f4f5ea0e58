"""Bounce state in Redis.

`connect(settings)` gives a Store: on the configured `[redis] url`, or, when it is empty, on the embedded
redis-server that bouncekeeper runs under `state_dir` (store/embedded.py).
"""

from __future__ import annotations

from bouncekeeper.config import ConfigError, Settings
from bouncekeeper.store.client import Client, make_client
from bouncekeeper.store.embedded import EmbeddedRedis, RootRefused
from bouncekeeper.store.errors import StoreUnavailable, guard
from bouncekeeper.store.outbox import Outbox
from bouncekeeper.store.redis_store import Store


def connect(settings: Settings, *, supervise: bool = False) -> Store:
    """A Store for these settings. With no URL, attach to (or start) the embedded redis-server; with
    `supervise` (the daemons) it is restarted if it dies. `Store.close()` stops a server it started."""
    hard, maxlen = settings.notify.hard_bounces, settings.notify.outbox_maxlen
    if settings.redis.url:
        return Store(_client(settings), settings.redis, notify_hard_bounces=hard, outbox_maxlen=maxlen)
    embedded = EmbeddedRedis(
        settings.state_dir, fsync=settings.redis.embedded_fsync, allow_root=settings.redis.embedded_as_root
    )
    try:
        embedded.start(supervise=supervise)
    except RootRefused as exc:
        raise ConfigError(settings.source, "redis.url", str(exc)) from exc
    try:
        return Store(
            _client(settings, embedded.url),
            settings.redis,
            on_close=embedded.stop,
            notify_hard_bounces=hard,
            outbox_maxlen=maxlen,
        )
    except Exception:
        embedded.stop()
        raise


def attach(settings: Settings) -> Store:
    """A Store on the configured URL, or on the embedded redis-server if it runs: never one started here
    (`bouncekeeper health` looks, it does not start). StoreUnavailable when there is none to attach to."""
    if settings.redis.url:
        return Store(_client(settings), settings.redis)
    embedded = EmbeddedRedis(settings.state_dir)
    if not embedded.alive():
        raise StoreUnavailable(f"the embedded redis-server is not running ({embedded.socket})")
    return Store(_client(settings, embedded.url), settings.redis)


def _client(settings: Settings, url: str | None = None) -> Client:
    with guard("connect"):  # a Cluster client connects (and can fail) as it is made
        return make_client(settings.redis, url)


__all__ = ["EmbeddedRedis", "Outbox", "Store", "StoreUnavailable", "attach", "connect"]
