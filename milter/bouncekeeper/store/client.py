"""The redis-py client for the configured `[redis]`: one server, a Sentinel-watched master or a Cluster;
timeouts, retries with backoff, TLS, credentials; and the Cluster's routing of EVALSHA by its keys.
"""

from __future__ import annotations

import contextlib
import pathlib
from typing import Any, TypeAlias

import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.commands.metadata import CommandPolicies, RequestPolicy, ResponsePolicy
from redis.commands.policies import BasePolicyResolver, PolicyResolver, StaticPolicyResolver
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from bouncekeeper.config import RedisSettings, parse_sentinel_url

Client: TypeAlias = "redis.Redis | RedisCluster"
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SENTINEL_SCHEME = "redis+sentinel://"
# The errors after which a command is sent again (within `retries`): the connection broke or timed out.
# A demoted master's READONLY is one of them on a Sentinel connection (redis-py reconnects to the master
# Sentinel names now); a script that ran before the break and runs again is a duplicate its dedup counts
# once.
RETRY_ON = [redis.ConnectionError, redis.TimeoutError]


def make_client(settings: RedisSettings, url: str | None = None) -> Client:
    """A redis-py client with the configured bounds: timeouts, and a few retries with backoff."""
    url = url if url is not None else settings.url
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), settings.retries)
    common: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": retry,
        "decode_responses": True,
    }
    if url.startswith(("rediss://", "rediss+cluster://")):
        # Certificate and host name always checked (redis-py's defaults, stated): a server that fails
        # them is unreachable to us, StoreUnavailable, never a silent plaintext or unverified fallback.
        common.update(
            ssl_cert_reqs="required",
            ssl_check_hostname=True,
            ssl_ca_certs=settings.tls_ca_file or None,
            ssl_certfile=settings.tls_cert_file or None,
            ssl_keyfile=settings.tls_key_file or None,
        )
    if settings.username:
        common["username"] = settings.username
    if settings.password_file:
        common["password"] = _read_password(settings.password_file)
    if url.startswith(CLUSTER_SCHEMES):
        plain = url.replace("+cluster", "", 1)
        return RedisCluster.from_url(plain, policy_resolver=_ScriptPolicies(), **common)
    if url.startswith(SENTINEL_SCHEME):
        return _sentinel_client(settings, url, common)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"unsupported Redis URL {url!r}: use redis://, rediss://, unix://, redis+cluster:// "
            "or redis+sentinel://"
        )
    return redis.Redis.from_url(url, retry_on_error=RETRY_ON, **common)


def _read_password(path: str) -> str:
    """A password file's content without its line ends (config.py checked that it is readable)."""
    return pathlib.Path(path).read_text("utf-8").replace("\r", "").replace("\n", "")


def _sentinel_client(settings: RedisSettings, url: str, common: dict[str, Any]) -> redis.Redis:
    """The master the sentinels name, asked again whenever a connection to it is (re)made.

    A connection to a master that died fails (ConnectionError, retried after asking the sentinels); one
    to a master that was demoted answers READONLY, which redis-py's Sentinel connection turns into a
    ConnectionError and a fresh question to the sentinels. With no master (during the election) the
    sentinels' answer is MasterNotFoundError, a ConnectionError too: StoreUnavailable, 451."""
    where = parse_sentinel_url(url)
    asked: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "decode_responses": True,
    }
    if settings.sentinel_username:
        asked["username"] = settings.sentinel_username
    if settings.sentinel_password_file:
        asked["password"] = _read_password(settings.sentinel_password_file)
    sentinel = Sentinel(list(where.sentinels), sentinel_kwargs=asked)
    client: redis.Redis = sentinel.master_for(where.service, db=where.db, retry_on_error=RETRY_ON, **common)
    return client


class _ScriptPolicies(BasePolicyResolver):
    """EVALSHA routed by its keys in a Cluster pipeline, without asking a node first.

    redis-py (8.x) resolves the routing of each pipelined command it has no static policy for with a
    `COMMAND GETKEYS` round trip of its own: one extra round trip per script call, before the pipeline
    is even sent. Declared keyed, EVALSHA takes redis-py's own EVAL/EVALSHA slot rule (the slot of its
    KEYS, all one hash tag here), and a bounce keeps to two round trips (tests/store/test_store.py counts
    them).
    """

    def __init__(self, fallback: PolicyResolver | None = None) -> None:
        keyed = CommandPolicies(
            request_policy=RequestPolicy.DEFAULT_KEYED, response_policy=ResponsePolicy.DEFAULT_KEYED
        )
        super().__init__({"core": {"evalsha": keyed, "eval": keyed}}, fallback or StaticPolicyResolver())

    def with_fallback(self, fallback: PolicyResolver) -> PolicyResolver:
        return _ScriptPolicies(fallback)


def close_client(client: Any) -> None:
    """Close the client's connections, and a Sentinel client's own connections to the sentinels."""
    with contextlib.suppress(redis.exceptions.RedisError, OSError):
        client.close()
        pool = getattr(client, "connection_pool", None)
        if isinstance(pool, SentinelConnectionPool):
            pool.sentinel_manager.close()
