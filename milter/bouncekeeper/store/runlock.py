"""A lock in Redis for cron jobs (`imap`, `probes run`): two overlapping runs must not both work.

SET NX with a TTL (a crashed run's lock expires by itself) holding a random token; released only by
its holder (compare and delete in one Lua step), so a run that outlived its TTL cannot free a lock a
newer run now holds. A Redis failure is `StoreUnavailable`, as everywhere in the store.
"""

from __future__ import annotations

import secrets

from bouncekeeper.store.errors import guard
from bouncekeeper.store.redis_store import Store

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Busy(Exception):
    """Another run holds the lock."""


class RunLock:
    def __init__(self, store: Store, key: str, ttl: int) -> None:
        self.store = store
        self.key = key
        self.ttl = ttl
        self.token = secrets.token_hex(8)

    def acquire(self) -> None:
        with guard("take run lock"):
            taken = self.store._client.set(self.key, self.token, nx=True, ex=self.ttl)
        if not taken:
            raise Busy(f"another run holds {self.key}")

    def release(self) -> None:
        with guard("release run lock"):
            self.store._client.eval(_RELEASE, 1, self.key, self.token)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
