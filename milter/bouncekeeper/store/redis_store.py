"""Bounce state in Redis: one atomic Lua step per address, at most two round trips per bounce.

On a single server one round trip: bounce.lua per address (breaker, stream entry, dedup, counters, state,
history, stats). On a Redis Cluster two. Round trip 1 (a pipeline): has this bounce been recorded for
these addresses already, the domain circuit breaker for failures that score (store/lua/breaker.lua, on
the domain's slot), and the event's global stream entry, whose ID the history line keeps. Round trip 2
(a pipeline): record.lua for each address (dedup, counters, state and history, atomically on the
address's slot), the stats counters, and XDEL of the stream entry of a bounce round trip 1 found already
recorded. Only the bounce that disables an address (or opens a breaker) costs a third, for the stream
entry announcing it.

Every Redis failure becomes `StoreUnavailable`, the one error the adapters turn into a tempfail.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import RedisCluster
from redis.commands.metadata import CommandPolicies, RequestPolicy, ResponsePolicy
from redis.commands.policies import BasePolicyResolver, PolicyResolver, StaticPolicyResolver
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from bouncekeeper.config import RedisSettings, parse_sentinel_url
from bouncekeeper.core.addresses import domain_of
from bouncekeeper.core.scoring import Effect, Rules, State
from bouncekeeper.log import get_logger
from bouncekeeper.store import keys as k
from bouncekeeper.store.errors import StoreUnavailable
from bouncekeeper.store.event import Event, Source, parse_history, parse_legacy_history, parse_track
from bouncekeeper.store.scripts import (
    AdminArgs,
    AdminReply,
    BounceArgs,
    BounceReply,
    BreakerArgs,
    BreakerReply,
    ImportArgs,
    RecordArgs,
    RecordReply,
    sha1,
    sources,
)

log = get_logger(__name__)

Client: TypeAlias = "redis.Redis | RedisCluster"
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SENTINEL_SCHEME = "redis+sentinel://"
# The errors after which a command is sent again (within `retries`): the connection broke or timed out.
# A demoted master's READONLY is one of them on a Sentinel connection (redis-py reconnects to the master
# Sentinel names now); a script that ran before the break and runs again is a duplicate its dedup counts
# once.
RETRY_ON = [redis.ConnectionError, redis.TimeoutError]
DAY = 86_400


@dataclass(frozen=True, slots=True)
class Item:
    """One address's part of one bounce."""

    address: str
    effect: Effect
    event: Event
    # The bounce came with evidence for this address (a signed VERP address naming it, the
    # application's own SMTP-time report): only then does it count towards the domain's circuit breaker.
    authentic: bool = True
    # The signed VERP address (or token) the bounce came to, as an id: it scores this address once within
    # Rules.replay_window (record.lua). Empty: no replay check.
    verp_id: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    address: str
    duplicate: bool
    state: State
    score: int
    soft_count: int
    scored: bool = False
    converted: bool = False
    disabled: bool = False
    reached: bool = False
    crossed: bool = False  # this bounce took the score to the threshold (announced once per crossing)
    frozen: bool = False
    why: str = ""


@dataclass(frozen=True, slots=True)
class Suppression:
    """One address of an imported suppression list (`bouncekeeper import`): the state to hold, since when
    and by whom, and the audit event that says where it came from."""

    address: str
    state: State
    since: float
    by: str
    event: Event


@dataclass(frozen=True, slots=True)
class AddressView:
    """One address as Redis holds it now, with the seconds left before each counter resets."""

    address: str
    state: State
    since: float | None = None
    by: str | None = None
    soft_count: int = 0
    soft_ttl: int | None = None
    hard_score: int = 0
    hard_day: int | None = None
    hard_ttl: int | None = None
    hits: int = 0
    hits_ttl: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tracked(self) -> bool:
        return self.state is not State.ACTIVE or bool(self.soft_count or self.hard_score or self.hits)


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


@contextlib.contextmanager
def _guard(what: str) -> Iterator[None]:
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


class Store:
    def __init__(
        self,
        client: Client,
        settings: RedisSettings | None = None,
        *,
        on_close: Callable[[], None] | None = None,
        notify_hard_bounces: bool = False,
        outbox_maxlen: int = 1_000_000,
    ) -> None:
        # The outbox (notify.py): also announce every hard bounce; the stream's approximate cap.
        self.notify_hard_bounces = notify_hard_bounces
        self.outbox_maxlen = outbox_maxlen
        # Any: redis-py's annotations type replies as bytes | str whatever decode_responses says; ours
        # are always str (decode_responses=True in make_client).
        self.client: Any = client
        self.settings = settings or RedisSettings()
        self.keys = k.Keys(self.settings.prefix)
        self.cluster = isinstance(client, RedisCluster)
        self._on_close = on_close
        self._sources = sources()
        self._shas = {name: sha1(source) for name, source in self._sources.items()}

    @classmethod
    def from_settings(cls, settings: RedisSettings, url: str | None = None) -> Store:
        with _guard("connect"):  # a Cluster client connects (and can fail) as it is made
            return cls(make_client(settings, url), settings)

    def close(self) -> None:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            self.client.close()
            pool = getattr(self.client, "connection_pool", None)
            if isinstance(pool, SentinelConnectionPool):
                pool.sentinel_manager.close()  # its own connections to the sentinels
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    # --- scripts ---

    def _load_scripts(self) -> None:
        for name, source in self._sources.items():
            self.client.script_load(source)
            log.debug("loaded %s.lua", name)

    def pipeline(self) -> Any:
        """A non-transactional pipeline; on a Cluster, one that routes EVALSHA without asking first."""
        pipe = self.client.pipeline(transaction=False)
        if self.cluster:
            # redis-py does not hand the client's policy_resolver to its ClusterPipeline (8.1).
            pipe._policy_resolver = _ScriptPolicies()
        return pipe

    def _batch(self, *, replicated: bool = False) -> _Batch:
        return _Batch(self, replicated=replicated)

    @property
    def waits(self) -> bool:
        """Whether a bounce's writes wait for replicas (WAIT, on each master a Cluster bounce writes to)."""
        return self.settings.wait_replicas > 0

    def _evalsha(self, client: Any, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        # execute_command: redis-py blocks the evalsha *method* on cluster pipelines, not the command,
        # which it routes by its keys (all in one slot here).
        return client.execute_command("EVALSHA", self._shas[name], len(keys), *keys, *args)

    def _call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return self._evalsha(self.client, name, keys, args)
        except redis.exceptions.NoScriptError:
            self._load_scripts()
            return self._evalsha(self.client, name, keys, args)

    # --- recording ---

    def record(
        self,
        items: Sequence[Item],
        *,
        now: float,
        rules: Rules,
        raw: bytes | None = None,
    ) -> list[Result]:
        """Record one bounce's items (one per address), atomically per address.

        One round trip on a single server (bounce.lua per item, pipelined); two on a Cluster.
        """
        if not items:
            return []
        s = self.settings
        with _guard("record bounce"):
            if self.cluster:
                results = self._record_split(items, now=now, rules=rules)
            else:
                results = self._record_single(items, now=now, rules=rules)
            if raw is not None and s.raw_days > 0 and not all(r.duplicate for r in results):
                self.client.set(self.keys.raw(items[0].event.id), raw[: s.raw_max_bytes], ex=s.raw_days * DAY)
        for r in results:
            if r.disabled:
                log.info("address disabled by bounces: %s score=%s/%s", r.address, r.score, rules.threshold)
        return results

    def _record_single(self, items: Sequence[Item], *, now: float, rules: Rules) -> list[Result]:
        day = rules.day(now)
        calls = []
        for item in items:
            domain = domain_of(item.address)
            keys = [
                self.keys.failing(domain),
                self.keys.frozen(domain),
                *self.keys.record_keys(item.address, item.event.id),
                self.keys.stream,
                self.keys.stats,
                self.keys.outbox,
                self.keys.replay(item.address, item.verp_id),
            ]
            # bounce.lua writes the stream entry and decides the breaker: ref and frozen are its own.
            bounce = BounceArgs(
                record=self._record_args(item, now=now, day=day, rules=rules, frozen=False, ref=""),
                breaker_use=_breaker_use(item, rules),
                address=item.address,
                breaker_window=rules.breaker_window,
                breaker_threshold=rules.breaker_addresses,
                breaker_freeze=rules.breaker_freeze,
                stream_size=self.settings.stream_size,
                event_kind=item.event.kind.value,
                source=item.event.source.value,
                domain=domain,
            )
            calls.append((keys, bounce.argv()))
        if len(calls) == 1 and not self.waits:
            # The common case, one address: a plain call is cheaper than a pipeline.
            replies = [self._call("bounce", *calls[0])]
        else:
            # WAIT counts the replicas that have this connection's writes: it goes in the same pipeline.
            batch = self._batch(replicated=self.waits)
            for keys, args in calls:
                batch.script("bounce", keys, args)
            replies = batch.execute()
        results = []
        for item, raw in zip(items, replies, strict=True):
            reply = BounceReply.parse(raw)
            if reply.opened:
                log.warning(
                    "circuit breaker opened for %s: %s addresses failing",
                    domain_of(item.address),
                    reply.distinct,
                )
            results.append(_result(item, reply.record, frozen=reply.open))
        return results

    def _record_split(self, items: Sequence[Item], *, now: float, rules: Rules) -> list[Result]:
        """The Cluster path: the domain, address, stream and stats keys live in different slots."""
        # Round trip 1: already recorded? And the breaker for the failures that would score.
        batch = self._batch(replicated=self.waits)
        breaker_at: dict[int, int] = {}
        for item in items:
            batch.pipe.exists(self.keys.seen(item.address, item.event.id))
        for n, item in enumerate(items):
            use = _breaker_use(item, rules)
            if use:
                domain = domain_of(item.address)
                breaker = BreakerArgs(
                    address=item.address,
                    now=repr(now),
                    window=rules.breaker_window,
                    threshold=rules.breaker_addresses,
                    freeze=rules.breaker_freeze,
                    feed=1 if use == 1 else 0,
                )
                breaker_at[n] = batch.script(
                    "breaker", [self.keys.failing(domain), self.keys.frozen(domain)], breaker.argv()
                )
        # The stream entries now, so that the history lines can name them (their IDs); a duplicate's
        # is deleted again in round trip 2.
        stream_at = [self._xadd(batch.pipe, i.event.kind.value, i.address, i.event.to_json()) for i in items]
        first = batch.execute()
        seen = [bool(x) for x in first[: len(items)]]
        refs = [str(first[i]) for i in stream_at]
        breakers = {n: BreakerReply.parse(first[i]) for n, i in breaker_at.items()}
        frozen = {n: b.open for n, b in breakers.items()}
        opened = {n: b.distinct for n, b in breakers.items() if b.opened}

        # Round trip 2: the atomic per-address steps, the stream and the stats.
        batch = self._batch(replicated=self.waits)
        pipe = batch.pipe
        day = rules.day(now)
        calls: dict[int, int] = {}
        for n, item in enumerate(items):
            # A duplicate still runs the script (it changes nothing and reports the current state)
            # and its stream entry goes again. Two copies delivered at the same instant can both pass
            # round trip 1: the script still counts one, the stream may show both (same `id`).
            record = self._record_args(
                item, now=now, day=day, rules=rules, frozen=frozen.get(n, False), ref=refs[n]
            )
            keys = [
                *self.keys.record_keys(item.address, item.event.id),
                self._outbox_key(item.address),
                self.keys.replay(item.address, item.verp_id),
            ]
            calls[n] = batch.script("record", keys, record.argv())
            if seen[n]:
                pipe.xdel(self.keys.stream, refs[n])
                pipe.hincrby(self.keys.stats, "duplicates", 1)
                continue
            pipe.hincrby(self.keys.stats, f"events:{item.event.kind.value}", 1)
        for n, count in opened.items():
            domain = domain_of(items[n].address)
            note = (
                f"domain {domain}: {count} addresses failing within {rules.breaker_window} s; "
                f"scoring frozen for {rules.breaker_freeze} s"
            )
            self._announce(pipe, "breaker", items[n], now, note)
            pipe.hincrby(self.keys.stats, "breaker:opened", 1)
            log.warning("circuit breaker opened for %s: %s addresses failing", domain, count)
        second = batch.execute()

        results = [
            _result(item, RecordReply.parse(second[calls[n]]), frozen=frozen.get(n, False))
            for n, item in enumerate(items)
        ]
        announce = [(item, r) for item, r in zip(items, results, strict=True) if r.disabled or r.crossed]
        if announce:
            # The rare third round trip: only the bounce that crosses the threshold pays it.
            batch = self._batch(replicated=self.waits)
            for item, r in announce:
                note = f"score {r.score}/{rules.threshold} ({rules.rule.value} rule)"
                self._announce(
                    batch.pipe, "disabled" if r.disabled else "threshold", item, now, note, id=item.event.id
                )
            batch.execute()
        return results

    def _announce(self, pipe: Any, kind: str, item: Item, now: float, note: str, **extra: str) -> None:
        """A state change or alert in the stream; the same fields bounce.lua writes."""
        entry = {
            "at": now,
            "kind": kind,
            "source": item.event.source.value,
            "address": item.address,
            "note": note,
        }
        self._xadd(pipe, kind, item.address, json.dumps({**entry, **extra}, separators=(",", ":")))
        pipe.hincrby(self.keys.stats, f"events:{kind}", 1)

    def _outbox_key(self, address: str) -> str:
        # A script touches one cluster slot: on a cluster, the address's own pending list (notify.py).
        return self.keys.address(address, k.OUTBOX) if self.cluster else self.keys.outbox

    @property
    def _outbox_mode(self) -> str:
        """How the scripts write the outbox: to the stream, or on a Cluster to the address's own list."""
        return "list" if self.cluster else "stream"

    def _record_args(
        self, item: Item, *, now: float, day: int, rules: Rules, frozen: bool, ref: str
    ) -> RecordArgs:
        s = self.settings
        event = item.event
        return RecordArgs(
            effect=item.effect.value,
            now=repr(now),
            day=day,
            mode=rules.mode.value,
            rule=rules.rule.value,
            soft_threshold=rules.soft_threshold,
            soft_window=rules.soft_window,
            threshold=rules.threshold,
            quiet=rules.quiet,
            count_window=rules.count_window,
            history_size=s.history_size,
            history_ttl=s.history_days * DAY,
            dedup_ttl=s.dedup_hours * 3600 if event.id else 0,
            event_json=event.to_json(),
            event_id=event.id or repr(now),
            frozen=1 if frozen else 0,
            notify_hard=1 if self.notify_hard_bounces else 0,
            outbox_mode=self._outbox_mode,
            outbox_maxlen=self.outbox_maxlen,
            history_line=event.to_history(),
            ref=ref,
            replay_ttl=_replay_ttl(item, rules),
        )

    def _xadd(self, pipe: Any, kind: str, address: str, event_json: str) -> int:
        """A stream entry: `kind` and `address` as fields for cheap filtering, the rest as JSON in `event`.
        Returns its position in the pipeline's replies (the reply is the entry's ID)."""
        fields = {"kind": kind, "address": address, "event": event_json}
        at = len(pipe)
        pipe.xadd(self.keys.stream, fields, maxlen=self.settings.stream_size, approximate=True)
        return at

    def log_event(self, event: Event) -> str:
        """An event for the global stream only (forged VERP, loops): one round trip. Returns its ID."""
        return self.log_events([event])[0]

    def log_once(self, event: Event, *, counters: Mapping[str, int] | None = None) -> str | None:
        """A stream-only event written once per message (`event.id`) within the dedup window: the
        `unvouched` entry a message makes for each of its envelope recipients and each delivery of it
        would otherwise be written again each time (100 case variants of the plain bounce address in one
        transaction wrote 100). Its ID, or None when it was written already. Two round trips; two copies
        delivered at the same instant may both write one."""
        key = self.keys.unvouched(event.id)
        with _guard("log event"):
            if self.client.exists(key):
                self.client.hincrby(self.keys.stats, "duplicates", 1)
                return None
        ref = self.log_events([event], counters=counters, mark=key)
        return ref[0]

    def log_events(
        self, events: Sequence[Event], *, counters: Mapping[str, int] | None = None, mark: str = ""
    ) -> list[str]:
        """Events for the global stream only, one round trip; no per-address key is made (a stranger's
        bounce naming thousands of addresses costs the bounded stream, not a key each). `counters`: more
        stats counters to add to in the same round trip; `mark`: a key set with the dedup window's TTL in
        the same round trip (log_once's). Returns the entries' IDs."""
        with _guard("log event"):
            pipe = self.pipeline()
            at = [self._xadd(pipe, e.kind.value, e.address or "", e.to_json()) for e in events]
            counts = dict(counters or {})
            for e in events:
                counts[f"events:{e.kind.value}"] = counts.get(f"events:{e.kind.value}", 0) + 1
            for name, count in counts.items():
                pipe.hincrby(self.keys.stats, name, count)
            if mark:
                pipe.set(mark, "1", ex=max(self.settings.dedup_hours * 3600, 1))
            replies = pipe.execute()
        return [str(replies[i]) for i in at]

    # --- the operator's view and acts ---

    def view(self, address: str, *, events: int = 10) -> AddressView:
        """One address as Redis holds it now (one round trip)."""
        return next(self.views([address], events=events))

    def views(self, addresses: Iterable[str], *, events: int = 0, batch: int = 500) -> Iterator[AddressView]:
        """Many addresses, `batch` per round trip (list, stats and export read thousands)."""
        pending: list[str] = []
        for address in addresses:
            pending.append(address)
            if len(pending) >= batch:
                yield from self._views(pending, events)
                pending = []
        if pending:
            yield from self._views(pending, events)

    def _views(self, addresses: list[str], events: int) -> list[AddressView]:
        a = self.keys.address
        per = 10 if events > 0 else 9  # the legacy history only when events are wanted
        with _guard("read address"):
            pipe = self.pipeline()
            for address in addresses:
                pipe.hgetall(a(address, k.STATE))
                pipe.get(a(address, k.SOFT))
                pipe.ttl(a(address, k.SOFT))
                pipe.get(a(address, k.TRACK))
                pipe.ttl(a(address, k.TRACK))
                pipe.zcard(a(address, k.HITS))
                pipe.ttl(a(address, k.HITS))
                # An earlier build's keys, until the next event moves the score or they expire.
                pipe.hgetall(a(address, k.LEGACY_HARD))
                pipe.ttl(a(address, k.LEGACY_HARD))
                if events > 0:
                    pipe.get(a(address, k.LEGACY_HISTORY))
            replies = pipe.execute()
        out = []
        for n, address in enumerate(addresses):
            st, soft, soft_ttl, track_value, track_ttl, hits, hits_ttl, old_hard, old_ttl, *old_history = (
                replies[n * per : (n + 1) * per]
            )
            track = parse_track(track_value)
            hard_day: int | None
            if track.day is not None:
                hard_score, hard_day, hard_ttl = track.score, track.day, _ttl(track_ttl)
            else:
                hard_score = int(old_hard.get("score", 0))
                hard_day = int(old_hard["day"]) if "day" in old_hard else None
                hard_ttl = _ttl(old_ttl)
            history: list[dict[str, Any]] = []
            if events > 0:
                history = parse_history(track.lines, address)[:events]
                if len(history) < events and old_history and old_history[0]:
                    history += parse_legacy_history(old_history[0], address)[: events - len(history)]
            out.append(
                AddressView(
                    address=address,
                    state=State(st.get("state", State.ACTIVE.value)),
                    since=float(st["since"]) if "since" in st else None,
                    by=st.get("by"),
                    soft_count=int(soft or 0),
                    soft_ttl=_ttl(soft_ttl),
                    hard_score=hard_score,
                    hard_day=hard_day,
                    hard_ttl=hard_ttl,
                    hits=int(hits),
                    hits_ttl=_ttl(hits_ttl),
                    events=history,
                )
            )
        if events > 0:
            self._join([e for view in out for e in view.events])
        return out

    def _join(self, entries: list[dict[str, Any]]) -> None:
        """Put each history entry's full event back from the global stream (its `ref`), one round trip.

        The history keeps only what explains the address's state; the Message-ID, diagnostic, remote MTA,
        client... are in the stream entry. When the stream was trimmed past it (stream_size), the entry
        says so: `trimmed` is true and only the history's own fields are there; `stream_unavailable`
        when the stream could not be read (its Cluster master is down)."""
        wanted = [e for e in entries if e.get("ref")]
        if not wanted:
            return
        try:
            with _guard("read stream"):
                pipe = self.pipeline()
                for e in wanted:
                    pipe.xrange(self.keys.stream, e["ref"], e["ref"], count=1)
                replies = pipe.execute()
        except StoreUnavailable as exc:
            # On a Cluster the stream lives on one master: when that one is down, the address's own
            # keys still answer. Show them, and say the details could not be read (not that they are gone).
            log.warning("event details not read: %s", exc)
            for e in wanted:
                e["stream_unavailable"] = True
            return
        for e, reply in zip(wanted, replies, strict=True):
            if not reply:
                e["trimmed"] = True
                continue
            full = parse_entry(reply[0][1])
            if full.get("address") not in (None, e["address"]):
                e["trimmed"] = True  # not this address's event: cannot happen unless keys were edited
                continue
            # The stream's values are whole (the history cuts notes and rounds `at`); the decision stays.
            e.update(full)

    def admin(
        self, address: str, action: str, event: Event, *, state: State | None = None, by: str = "admin"
    ) -> tuple[State, State]:
        """enable | disable (to `state`) | reset, with the audit event in the history and the stream."""
        s = self.settings
        # The audit event's stream entry first, so that the history line can name it; if the act then
        # fails, the entry is taken back (best effort: Redis is failing at that moment).
        ref = self.log_event(event)
        with _guard(f"{action} address"):
            try:
                args = AdminArgs(
                    action=action,
                    new_state=(state or State.ACTIVE).value,
                    now=repr(event.at),
                    by=by,
                    event_json=event.to_json(),
                    history_size=s.history_size,
                    history_ttl=s.history_days * DAY,
                    outbox_mode=self._outbox_mode,
                    outbox_maxlen=self.outbox_maxlen,
                    history_line=event.to_history(),
                    ref=ref,
                )
                reply = AdminReply.parse(
                    self._call(
                        "admin", [*self.keys.admin_keys(address), self._outbox_key(address)], args.argv()
                    )
                )
            except redis.exceptions.RedisError:
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    self.client.xdel(self.keys.stream, ref)
                raise
        return State(reply.previous), State(reply.state)

    def states(self, addresses: Sequence[str]) -> list[State]:
        """Each address's state now, one round trip."""
        with _guard("read state"):
            pipe = self.pipeline()
            for address in addresses:
                pipe.hget(self.keys.address(address, k.STATE), "state")
            replies = pipe.execute()
        return [State(r) if r else State.ACTIVE for r in replies]

    def import_suppressions(self, rows: Sequence[Suppression]) -> list[State]:
        """Set each row's state where its address is active (import.lua), with its audit event in the
        stream and the address's history; an address that holds a state already keeps it, and its event
        is taken back. Returns the state each address held before: ACTIVE where this call set it. Three
        round trips for the whole batch: the states, the events, the scripts."""
        if not rows:
            return []
        before = self.states([r.address for r in rows])
        wanted = [r for r, state in zip(rows, before, strict=True) if state is State.ACTIVE]
        if not wanted:
            return before
        refs = self.log_events([r.event for r in wanted])
        with _guard("import suppressions"):
            batch = self._batch()
            for row, ref in zip(wanted, refs, strict=True):
                args = ImportArgs(
                    state=row.state.value,
                    since=repr(row.since),
                    by=row.by,
                    history_line=row.event.to_history(),
                    ref=ref,
                    history_size=self.settings.history_size,
                )
                keys = [self.keys.address(row.address, k.STATE), self.keys.address(row.address, k.TRACK)]
                batch.script("import", keys, args.argv())
            replies = batch.execute()
            # Set meanwhile by another process: its state stays, and this import's event goes.
            raced = [ref for ref, reply in zip(refs, replies, strict=True) if reply != State.ACTIVE.value]
            if raced:
                self.client.xdel(self.keys.stream, *raced)
        held = iter(State(r) for r in replies)
        return [next(held) if state is State.ACTIVE else state for state in before]

    def events_since(self, start: float, *, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Every event of the global stream from `start` (epoch seconds) on, oldest first, `batch` per
        round trip. The stream is capped at about `stream_size` entries, so this is bounded."""
        cursor = f"{max(int(start * 1000), 0)}-0"
        while True:
            with _guard("read stream"):
                entries = self.client.xrange(self.keys.stream, min=cursor, count=batch)
            for _entry_id, fields in entries:
                yield parse_entry(fields)
            if len(entries) < batch:
                return
            cursor = "(" + str(entries[-1][0])

    def is_suppressed(self, address: str) -> bool:
        with _guard("read state"):
            state = self.client.hget(self.keys.address(address, k.STATE), "state")
        return state is not None and state != State.ACTIVE.value

    def addresses(
        self, suffixes: Sequence[str] = (k.STATE, k.TRACK, k.SOFT, k.HITS, k.LEGACY_HARD)
    ) -> Iterator[str]:
        """Every address with one of these keys (SCAN, on every node of a cluster). Unordered, unique.
        A `track` key can hold a history alone: callers that want tracked addresses check the view."""
        seen: set[str] = set()
        with _guard("scan addresses"):
            for suffix in suffixes:
                for key in self.client.scan_iter(match=self.keys.address_pattern(suffix), count=1000):
                    address = self.keys.parse_address(key)
                    if address is not None and address not in seen:
                        seen.add(address)
                        yield address

    def frozen_domains(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with _guard("scan breakers"):
            for key in self.client.scan_iter(match=self.keys.frozen_pattern(), count=1000):
                domain = self.keys.parse_domain(key)
                if domain is not None:
                    info: dict[str, Any] = dict(self.client.hgetall(key))
                    info["ttl"] = int(self.client.ttl(key))
                    out[domain] = info
        return out

    def counters(self) -> dict[str, int]:
        with _guard("read stats"):
            raw = self.client.hgetall(self.keys.stats)
            length = self.client.xlen(self.keys.stream)
        out = {key: int(value) for key, value in raw.items()}
        out["stream:length"] = int(length)
        return out

    def recent(self, count: int = 20) -> list[tuple[str, dict[str, Any]]]:
        """The newest stream entries: (entry id, the event's fields)."""
        with _guard("read stream"):
            entries = self.client.xrevrange(self.keys.stream, count=count)
        return [(str(i), parse_entry(f)) for i, f in entries]

    # --- token mode (several recipients behind one VERP address) ---

    def put_token(self, token: str, fields: dict[str, str], ttl: int) -> None:
        """Store a token's data for `ttl` seconds (the VERP validity). Tokens are random: 80 bits."""
        key = self.keys.token(token)
        with _guard("store token"):
            pipe = self.pipeline()
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
            pipe.execute()

    def get_token(self, token: str) -> dict[str, str] | None:
        with _guard("read token"):
            data = self.client.hgetall(self.keys.token(token))
        return dict(data) if data else None

    # --- admin page sessions (httpd.py): server-side, so that logging out ends them ---

    def put_session(self, digest: str, fingerprint: str, ttl: int) -> None:
        with _guard("store session"):
            self.client.set(self.keys.session(digest), fingerprint, ex=ttl)

    def get_session(self, digest: str) -> str | None:
        with _guard("read session"):
            value = self.client.get(self.keys.session(digest))
        return str(value) if value is not None else None

    def drop_session(self, digest: str) -> None:
        with _guard("drop session"):
            self.client.delete(self.keys.session(digest))

    def ping(self) -> None:
        with _guard("ping"):
            self.client.ping()


def parse_entry(fields: dict[str, str]) -> dict[str, Any]:
    """A stream entry's fields as one dict (the JSON `event` merged with `kind` and `address`)."""
    out: dict[str, Any] = json.loads(fields.get("event") or "{}")
    out.setdefault("kind", fields.get("kind"))
    if fields.get("address"):
        out.setdefault("address", fields["address"])
    return out


def _breaker_use(item: Item, rules: Rules) -> int:
    """bounce.lua's breaker_use: 0 the breaker is not asked, 1 asked and fed, 2 asked only (not authentic)."""
    if item.effect is Effect.NONE or rules.breaker_addresses <= 0:
        return 0
    return 1 if item.authentic else 2


def _replay_ttl(item: Item, rules: Rules) -> int:
    """record.lua's replay_ttl: how long this item's VERP address is remembered as having scored."""
    return rules.replay_window if item.verp_id else 0


def _ttl(value: int) -> int | None:
    """A TTL reply as seconds left, None when the key is missing (-2) or has no TTL (-1)."""
    return int(value) if int(value) >= 0 else None


def _result(item: Item, r: RecordReply, *, frozen: bool) -> Result:
    """record.lua's reply as a Result."""
    return Result(
        address=item.address,
        duplicate=r.status == "duplicate",
        state=State(r.state),
        score=r.score,
        soft_count=r.soft_count,
        scored=r.scored,
        converted=r.converted,
        disabled=r.disabled,
        reached=r.reached,
        crossed=r.crossed,
        frozen=frozen,
        why=r.why,
    )


class _Batch:
    """A non-transactional pipeline that remembers its script calls.

    When Redis answers NOSCRIPT (it restarted and forgot the scripts), the scripts are loaded and only
    the script calls that failed are sent again: the other commands of the batch (stream entries,
    counters) already ran and must not run twice.
    """

    def __init__(self, store: Store, *, replicated: bool = False) -> None:
        self.store = store
        self.pipe: Any = store.pipeline()
        self.calls: dict[int, tuple[str, list[str], list[Any]]] = {}
        # WAIT after the writes, on the same connection (a pipeline's), and its answer checked.
        self.replicated = replicated

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> int:
        """Queue a script call; return its position in the results."""
        at = len(self.pipe)
        self.calls[at] = (name, list(keys), list(args))
        self.store._evalsha(self.pipe, name, keys, args)
        return at

    def execute(self) -> list[Any]:
        if not len(self.pipe):
            return []
        size = len(self.pipe)
        results: list[Any] = self._run(self.pipe)
        acks, results = results[size:], results[:size]
        missing = [i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)]
        if missing:
            self.store._load_scripts()
            again: Any = self.store.pipeline()
            for i in missing:
                name, keys, args = self.calls[i]
                self.store._evalsha(again, name, keys, args)
            replies = self._run(again)
            acks += replies[len(missing) :]
            for i, r in zip(missing, replies[: len(missing)], strict=True):
                results[i] = r
        for r in [*results, *acks]:
            if isinstance(r, Exception):
                raise r
        self._check(acks)
        return results

    def _run(self, pipe: Any) -> list[Any]:
        if self.replicated and self.store.cluster:
            return self._run_cluster(pipe)
        if self.replicated:
            pipe.execute_command("WAIT", *self._wait_args())
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies

    def _wait_args(self) -> tuple[int, int]:
        s = self.store.settings
        return s.wait_replicas, max(1, round(s.wait_timeout * 1000))

    def _run_cluster(self, pipe: Any) -> list[Any]:
        """WAIT on every master the batch writes to, each on the connection that carried its writes.

        WAIT counts only its own connection's writes. A ClusterPipeline sends each node's commands on one
        connection, so one WAIT per node, routed to that node, goes after them there. What would break
        that is redis-py sending a command again (a MOVED, ASK or connection error) on another connection,
        or routing a WAIT again as a keyless command to any node: so no redirection and no retry here,
        and a slot map that changed while the batch was routed (another thread refreshed it) is not
        trusted. Either is an outage (451); the topology is refreshed for the MTA's retry.
        """
        client = self.store.client
        manager = client.nodes_manager
        if manager._refresh_requested:  # redis-py 8.2 runs it as the batch starts: before routing here
            manager._run_requested_refresh(client.retry)
        writes = list(pipe._execution_strategy.command_queue)  # redis-py 8.2: the queued commands
        routed = self._nodes(writes)
        for node in {node.name: node for node in routed}.values():
            pipe.execute_command("WAIT", *self._wait_args(), target_nodes=node)
        pipe.retry = Retry(NoBackoff(), 0)
        try:
            replies: list[Any] = pipe.send_cluster_commands(
                list(pipe._execution_strategy.command_queue), raise_on_error=False, allow_redirections=False
            )
        finally:
            pipe.reset()
        if any(isinstance(r, (redis.exceptions.MovedError, redis.exceptions.AskError)) for r in replies):
            manager._request_refresh()  # run by the next batch, before it routes
        if [n.name for n in self._nodes(writes)] != [n.name for n in routed]:
            raise StoreUnavailable("record bounce: the cluster's slot map changed while it was written")
        return replies

    def _nodes(self, commands: list[Any]) -> list[Any]:
        """The master each queued command goes to, as the ClusterPipeline routes it."""
        client = self.store.client
        return [client._get_node_from_slot(c.args[0], client.determine_slot(*c.args)) for c in commands]

    def _check(self, acks: list[Any]) -> None:
        """Fewer replicas than wait_replicas hold the writes: the master has them, but would lose them if
        it died now. A tempfail: the MTA sends the bounce again, and the store counts it once."""
        wanted = self.store.settings.wait_replicas
        for acked in acks:
            if int(acked) < wanted:
                raise StoreUnavailable(f"record bounce: {acked} of {wanted} replicas acknowledged in time")


__all__ = [
    "AddressView",
    "Item",
    "Result",
    "Source",
    "Store",
    "StoreUnavailable",
    "Suppression",
    "make_client",
]
