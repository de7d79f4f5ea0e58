"""The one error the store raises: the mail adapters answer 451 4.3.0 on it and never lose a message.

`guard` turns every Redis failure into it, inside the store: no adapter sees a redis-py exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis.exceptions

from bouncekeeper.log import get_logger

# The name the store has always logged under, which operators grep for (the store is several modules now).
log = get_logger("bouncekeeper.store.redis_store")


class StoreUnavailable(Exception):
    """Redis could not be reached, timed out, or refused the command; the write did not happen."""


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Turn every Redis failure into StoreUnavailable, naming what we were doing."""
    try:
        yield
    except (
        redis.exceptions.ClusterDownError,
        redis.exceptions.TryAgainError,
        redis.exceptions.MasterDownError,
        redis.exceptions.ReadOnlyError,
        redis.exceptions.AskError,  # MovedError too: a slot that moved, met without redirection (WAIT)
    ) as exc:
        # Replies, but outages: a Cluster that lost a master's slots (CLUSTERDOWN, once the other masters
        # marked it failed), a slot being moved (TRYAGAIN), a replica without its master, a master that
        # was demoted to a replica (READONLY, when no Sentinel tells us where the new one is).
        raise StoreUnavailable(f"{what}: redis unavailable: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        # A script error is a bug, not an outage: say so loudly, but the mail still only gets a tempfail.
        log.error("redis refused %s: %s", what, exc)
        raise StoreUnavailable(f"{what}: redis error: {exc}") from exc
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        # RedisClusterException ("no reachable node") is not a RedisError subclass.
        raise StoreUnavailable(f"{what}: redis unavailable: {exc}") from exc
