"""Bounce state in Redis: the store's public methods (recording is in store/recording.py).

The store is the only code that talks to Redis (store/connection.py holds its client). Every Redis failure
becomes `StoreUnavailable`, the one error the adapters turn into a tempfail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis.exceptions

from bouncekeeper.config import RedisSettings
from bouncekeeper.core.scoring import DAY, Rules, State
from bouncekeeper.store import keys as k
from bouncekeeper.store import recording
from bouncekeeper.store.client import make_client
from bouncekeeper.store.connection import Connection
from bouncekeeper.store.errors import StoreUnavailable, guard, log
from bouncekeeper.store.event import Event, parse_history, parse_legacy_history, parse_track
from bouncekeeper.store.model import AddressView, Item, Result, Suppression, parse_entry
from bouncekeeper.store.scripts import AdminArgs, AdminReply, ImportArgs


class Store(Connection):
    """Bounce state in Redis: what the daemons, the notifier and the operator commands read and write."""

    @classmethod
    def from_settings(cls, settings: RedisSettings, url: str | None = None) -> Store:
        with guard("connect"):  # a Cluster client connects (and can fail) as it is made
            return cls(make_client(settings, url), settings)

    # --- recording ---

    def record(
        self, items: Sequence[Item], *, now: float, rules: Rules, raw: bytes | None = None
    ) -> list[Result]:
        """Record one bounce's items (one per address), atomically per address (store/recording.py).

        One round trip on a single server (bounce.lua per item, pipelined); two on a Cluster.
        """
        return recording.record(self, items, now=now, rules=rules, raw=raw)

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
        with guard("log event"):
            if self._client.exists(key):
                self._client.hincrby(self.keys.stats, "duplicates", 1)
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
        with guard("log event"):
            pipe = self._pipeline()
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
        with guard("read address"):
            pipe = self._pipeline()
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
            with guard("read stream"):
                pipe = self._pipeline()
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
        with guard(f"{action} address"):
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
                    self._client.xdel(self.keys.stream, ref)
                raise
        return State(reply.previous), State(reply.state)

    def states(self, addresses: Sequence[str]) -> list[State]:
        """Each address's state now, one round trip."""
        with guard("read state"):
            pipe = self._pipeline()
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
        with guard("import suppressions"):
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
                self._client.xdel(self.keys.stream, *raced)
        held = iter(State(r) for r in replies)
        return [next(held) if state is State.ACTIVE else state for state in before]

    def events_since(self, start: float, *, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Every event of the global stream from `start` (epoch seconds) on, oldest first, `batch` per
        round trip. The stream is capped at about `stream_size` entries, so this is bounded."""
        cursor = f"{max(int(start * 1000), 0)}-0"
        while True:
            with guard("read stream"):
                entries = self._client.xrange(self.keys.stream, min=cursor, count=batch)
            for _entry_id, fields in entries:
                yield parse_entry(fields)
            if len(entries) < batch:
                return
            cursor = "(" + str(entries[-1][0])

    def is_suppressed(self, address: str) -> bool:
        with guard("read state"):
            state = self._client.hget(self.keys.address(address, k.STATE), "state")
        return state is not None and state != State.ACTIVE.value

    def addresses(
        self, suffixes: Sequence[str] = (k.STATE, k.TRACK, k.SOFT, k.HITS, k.LEGACY_HARD)
    ) -> Iterator[str]:
        """Every address with one of these keys (SCAN, on every node of a cluster). Unordered, unique.
        A `track` key can hold a history alone: callers that want tracked addresses check the view."""
        seen: set[str] = set()
        with guard("scan addresses"):
            for suffix in suffixes:
                for key in self._client.scan_iter(match=self.keys.address_pattern(suffix), count=1000):
                    address = self.keys.parse_address(key)
                    if address is not None and address not in seen:
                        seen.add(address)
                        yield address

    def frozen_domains(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with guard("scan breakers"):
            for key in self._client.scan_iter(match=self.keys.frozen_pattern(), count=1000):
                domain = self.keys.parse_domain(key)
                if domain is not None:
                    info: dict[str, Any] = dict(self._client.hgetall(key))
                    info["ttl"] = int(self._client.ttl(key))
                    out[domain] = info
        return out

    def counters(self) -> dict[str, int]:
        with guard("read stats"):
            raw = self._client.hgetall(self.keys.stats)
            length = self._client.xlen(self.keys.stream)
        out = {key: int(value) for key, value in raw.items()}
        out["stream:length"] = int(length)
        return out

    def recent(self, count: int = 20) -> list[tuple[str, dict[str, Any]]]:
        """The newest stream entries: (entry id, the event's fields)."""
        with guard("read stream"):
            entries = self._client.xrevrange(self.keys.stream, count=count)
        return [(str(i), parse_entry(f)) for i, f in entries]

    # --- token mode (several recipients behind one VERP address) ---

    def put_token(self, token: str, fields: dict[str, str], ttl: int) -> None:
        """Store a token's data for `ttl` seconds (the VERP validity). Tokens are random: 80 bits."""
        key = self.keys.token(token)
        with guard("store token"):
            pipe = self._pipeline()
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
            pipe.execute()

    def get_token(self, token: str) -> dict[str, str] | None:
        with guard("read token"):
            data = self._client.hgetall(self.keys.token(token))
        return dict(data) if data else None

    # --- probes (daemons/probes.py): the probe records of an address, newest first ---

    def probes(self, address: str, count: int) -> list[str]:
        """The newest `count` probe records (JSON) sent to an address."""
        with guard("read probes"):
            records: list[str] = self._client.lrange(self.keys.address(address, k.PROBES), 0, count - 1)
        return records

    def add_probe(self, address: str, record: str, *, keep: int) -> None:
        """A probe record first in the address's list, which keeps the newest `keep`; one round trip."""
        key = self.keys.address(address, k.PROBES)
        with guard("save probe"):
            pipe = self._pipeline()
            pipe.lpush(key, record)
            pipe.ltrim(key, 0, keep - 1)
            pipe.execute()

    # --- admin page sessions (httpd.py): server-side, so that logging out ends them ---

    def put_session(self, digest: str, fingerprint: str, ttl: int) -> None:
        with guard("store session"):
            self._client.set(self.keys.session(digest), fingerprint, ex=ttl)

    def get_session(self, digest: str) -> str | None:
        with guard("read session"):
            value = self._client.get(self.keys.session(digest))
        return str(value) if value is not None else None

    def drop_session(self, digest: str) -> None:
        with guard("drop session"):
            self._client.delete(self.keys.session(digest))

    def ping(self) -> None:
        with guard("ping"):
            self._client.ping()


def _ttl(value: int) -> int | None:
    """A TTL reply as seconds left, None when the key is missing (-2) or has no TTL (-1)."""
    return int(value) if int(value) >= 0 else None
