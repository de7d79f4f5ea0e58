"""Recording one bounce: one atomic Lua step per address, at most two round trips per bounce.

On a single server one round trip: bounce.lua per address (breaker, stream entry, dedup, counters, state,
history, stats). On a Redis Cluster two. Round trip 1 (a pipeline): has this bounce been recorded for
these addresses already, the domain circuit breaker for failures that score (store/lua/breaker.lua, on
the domain's slot), and the event's global stream entry, whose ID the history line keeps. Round trip 2
(a pipeline): record.lua for each address (dedup, counters, state and history, atomically on the
address's slot), the stats counters, and XDEL of the stream entry of a bounce round trip 1 found already
recorded. Only the bounce that disables an address (or opens a breaker) costs a third, for the stream
entry announcing it. The raw bounce, when kept (raw_days), goes in the last of these pipelines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bouncekeeper.core.addresses import domain_of
from bouncekeeper.core.scoring import DAY, Effect, Rules, State
from bouncekeeper.store.connection import Connection
from bouncekeeper.store.errors import guard, log
from bouncekeeper.store.model import Item, Result
from bouncekeeper.store.scripts import (
    BounceArgs,
    BounceReply,
    BreakerArgs,
    BreakerReply,
    RecordArgs,
    RecordReply,
)


def record(
    store: Connection, items: Sequence[Item], *, now: float, rules: Rules, raw: bytes | None = None
) -> list[Result]:
    """Record one bounce's items (one per address), atomically per address (Store.record)."""
    if not items:
        return []
    s = store.settings
    keep = raw[: s.raw_max_bytes] if raw is not None and s.raw_days > 0 else None
    bounce = _Recording(store, now=now, rules=rules, raw=keep)
    with guard("record bounce"):
        results = bounce.split(items) if store.cluster else bounce.single(items)
    for r in results:
        if r.disabled:
            log.info("address disabled by bounces: %s score=%s/%s", r.address, r.score, rules.threshold)
    return results


@dataclass(frozen=True, slots=True)
class _Checked:
    """What the Cluster path's round trip 1 found, per item (by its position)."""

    seen: list[bool]  # already recorded
    refs: list[str]  # its stream entry's ID
    frozen: dict[int, bool]  # its domain's breaker is open (items whose breaker was asked)
    opened: dict[int, int]  # this bounce opened it: the distinct addresses failing


class _Recording:
    """One bounce being recorded: the store, the clock and the rules that each of its steps shares."""

    def __init__(self, store: Connection, *, now: float, rules: Rules, raw: bytes | None) -> None:
        self.store = store
        self.keys = store.keys
        self.now = now
        self.rules = rules
        self.day = rules.day(now)
        self.raw = raw  # the raw bounce to keep (raw_days > 0), already cut to raw_max_bytes

    def _keep_raw(self, pipe: Any, items: Sequence[Item]) -> None:
        """The raw bounce, in the bounce's last pipeline rather than a round trip of its own. NX: a
        duplicate leaves the copy its first delivery kept."""
        if self.raw is not None:
            s = self.store.settings
            pipe.set(self.keys.raw(items[0].event.id), self.raw, ex=s.raw_days * DAY, nx=True)

    def single(self, items: Sequence[Item]) -> list[Result]:
        """The single-server path: bounce.lua per item, one round trip."""
        store, keys, rules = self.store, self.keys, self.rules
        calls = []
        for item in items:
            domain = domain_of(item.address)
            script_keys = [
                keys.failing(domain),
                keys.frozen(domain),
                *keys.record_keys(item.address, item.event.id),
                keys.stream,
                keys.stats,
                keys.outbox,
                keys.replay(item.address, item.verp_id),
            ]
            # bounce.lua writes the stream entry and decides the breaker: ref and frozen are its own.
            bounce = BounceArgs(
                record=self._record_args(item, frozen=False, ref=""),
                breaker_use=_breaker_use(item, rules),
                address=item.address,
                breaker_window=rules.breaker_window,
                breaker_threshold=rules.breaker_addresses,
                breaker_freeze=rules.breaker_freeze,
                stream_size=store.settings.stream_size,
                event_kind=item.event.kind.value,
                source=item.event.source.value,
                domain=domain,
            )
            calls.append((script_keys, bounce.argv()))
        if len(calls) == 1 and not store.waits and self.raw is None:
            # The common case, one address: a plain call is cheaper than a pipeline.
            replies = [store._call("bounce", *calls[0])]
        else:
            # WAIT counts the replicas that have this connection's writes: it goes in the same pipeline.
            batch = store._batch(replicated=store.waits)
            for script_keys, args in calls:
                batch.script("bounce", script_keys, args)
            self._keep_raw(batch.pipe, items)
            replies = batch.execute()[: len(calls)]
        results = []
        for item, raw in zip(items, replies, strict=True):
            reply = BounceReply.parse(raw)
            if reply.opened:
                domain = domain_of(item.address)
                log.warning("circuit breaker opened for %s: %s addresses failing", domain, reply.distinct)
            results.append(_result(item, reply.record, frozen=reply.open))
        return results

    def split(self, items: Sequence[Item]) -> list[Result]:
        """The Cluster path: the domain, address, stream and stats keys live in different slots."""
        checked = self._check(items)
        results = self._record_each(items, checked)
        announce = [(item, r) for item, r in zip(items, results, strict=True) if r.disabled or r.crossed]
        if announce:
            # The rare third round trip: only the bounce that crosses the threshold pays it.
            batch = self.store._batch(replicated=self.store.waits)
            for item, r in announce:
                kind = "disabled" if r.disabled else "threshold"
                note = f"score {r.score}/{self.rules.threshold} ({self.rules.rule.value} rule)"
                self._announce(batch.pipe, kind, item, note, id=item.event.id)
            batch.execute()
        return results

    def _check(self, items: Sequence[Item]) -> _Checked:
        """Round trip 1: already recorded? The breaker for the failures that would score; the stream
        entries, so that the history lines can name them (a duplicate's is deleted again in round trip 2)."""
        store, keys, rules = self.store, self.keys, self.rules
        batch = store._batch(replicated=store.waits)
        breaker_at: dict[int, int] = {}
        for item in items:
            batch.pipe.exists(keys.seen(item.address, item.event.id))
        for n, item in enumerate(items):
            use = _breaker_use(item, rules)
            if use:
                domain = domain_of(item.address)
                breaker = BreakerArgs(
                    address=item.address,
                    now=repr(self.now),
                    window=rules.breaker_window,
                    threshold=rules.breaker_addresses,
                    freeze=rules.breaker_freeze,
                    feed=1 if use == 1 else 0,
                )
                script_keys = [keys.failing(domain), keys.frozen(domain)]
                breaker_at[n] = batch.script("breaker", script_keys, breaker.argv())
        stream_at = [store._xadd(batch.pipe, i.event.kind.value, i.address, i.event.to_json()) for i in items]
        first = batch.execute()
        breakers = {n: BreakerReply.parse(first[i]) for n, i in breaker_at.items()}
        return _Checked(
            seen=[bool(x) for x in first[: len(items)]],
            refs=[str(first[i]) for i in stream_at],
            frozen={n: b.open for n, b in breakers.items()},
            opened={n: b.distinct for n, b in breakers.items() if b.opened},
        )

    def _record_each(self, items: Sequence[Item], checked: _Checked) -> list[Result]:
        """Round trip 2: the atomic per-address steps, the stream and the stats."""
        store, keys, rules = self.store, self.keys, self.rules
        batch = store._batch(replicated=store.waits)
        pipe = batch.pipe
        calls: dict[int, int] = {}
        for n, item in enumerate(items):
            # A duplicate still runs the script (it changes nothing and reports the current state)
            # and its stream entry goes again. Two copies delivered at the same instant can both pass
            # round trip 1: the script still counts one, the stream may show both (same `id`).
            args = self._record_args(item, frozen=checked.frozen.get(n, False), ref=checked.refs[n])
            script_keys = [
                *keys.record_keys(item.address, item.event.id),
                store._outbox_key(item.address),
                keys.replay(item.address, item.verp_id),
            ]
            calls[n] = batch.script("record", script_keys, args.argv())
            if checked.seen[n]:
                pipe.xdel(keys.stream, checked.refs[n])
                pipe.hincrby(keys.stats, "duplicates", 1)
                continue
            pipe.hincrby(keys.stats, f"events:{item.event.kind.value}", 1)
        for n, count in checked.opened.items():
            domain = domain_of(items[n].address)
            note = (
                f"domain {domain}: {count} addresses failing within {rules.breaker_window} s; "
                f"scoring frozen for {rules.breaker_freeze} s"
            )
            self._announce(pipe, "breaker", items[n], note)
            pipe.hincrby(keys.stats, "breaker:opened", 1)
            log.warning("circuit breaker opened for %s: %s addresses failing", domain, count)
        self._keep_raw(pipe, items)
        second = batch.execute()
        return [
            _result(item, RecordReply.parse(second[calls[n]]), frozen=checked.frozen.get(n, False))
            for n, item in enumerate(items)
        ]

    def _announce(self, pipe: Any, kind: str, item: Item, note: str, **extra: str) -> None:
        """A state change or alert in the stream; the same fields bounce.lua writes."""
        entry = {
            "at": self.now,
            "kind": kind,
            "source": item.event.source.value,
            "address": item.address,
            "note": note,
        }
        self.store._xadd(pipe, kind, item.address, json.dumps({**entry, **extra}, separators=(",", ":")))
        pipe.hincrby(self.keys.stats, f"events:{kind}", 1)

    def _record_args(self, item: Item, *, frozen: bool, ref: str) -> RecordArgs:
        s, rules, now = self.store.settings, self.rules, self.now
        event = item.event
        return RecordArgs(
            effect=item.effect.value,
            now=repr(now),
            day=self.day,
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
            notify_hard=1 if self.store.notify_hard_bounces else 0,
            outbox_mode=self.store._outbox_mode,
            outbox_maxlen=self.store.outbox_maxlen,
            history_line=event.to_history(),
            ref=ref,
            replay_ttl=_replay_ttl(item, rules),
        )


def _breaker_use(item: Item, rules: Rules) -> int:
    """bounce.lua's breaker_use: 0 the breaker is not asked, 1 asked and fed, 2 asked only (not authentic)."""
    if item.effect is Effect.NONE or rules.breaker_addresses <= 0:
        return 0
    return 1 if item.authentic else 2


def _replay_ttl(item: Item, rules: Rules) -> int:
    """record.lua's replay_ttl: how long this item's VERP address is remembered as having scored."""
    return rules.replay_window if item.verp_id else 0


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
