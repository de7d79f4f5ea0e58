"""The notifier's keys in Redis: the outbox stream, its consumer group, dead letters and delivery counts.

The store writes the outbox entries (record.lua, admin.lua); `notify.py` delivers them. Every read and
write of these keys goes through `Outbox`, and every Redis failure becomes `StoreUnavailable`. The keys
share the hash tag {outbox} (store/keys.py): one slot, so the MULTI steps here work on a cluster too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis.exceptions

from bouncekeeper.store.errors import guard
from bouncekeeper.store.keys import OUTBOX as OUTBOX_SUFFIX
from bouncekeeper.store.redis_store import Store

GROUP = "notify"
# Progress of an entry is forgotten this long after its last change (it is deleted when the entry is done;
# the TTL only clears what a crash between the two steps of finishing could leave).
STATE_TTL = 30 * 86_400

Fields = dict[str, str]
# One entry: its id and fields; None for an entry deleted while it was pending (XREADGROUP "0").
Row = tuple[str, Fields | None]


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any] | None) -> Fields | None:
    return {_text(k): _text(v) for k, v in raw.items()} if raw else None


def _rows(reply: Any) -> list[Row]:
    """Entries of an XREAD(GROUP) reply of one stream, RESP2 (list of pairs) or RESP3 (a dict)."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else [r[1] for r in reply]
    return [(_text(entry_id), _fields(fields)) for rows in streams for entry_id, fields in rows]


class Outbox:
    """The outbox stream `{prefix}{outbox}:stream` and its companions, on the store's connection."""

    def __init__(self, store: Store) -> None:
        self._client: Any = store._client
        self.keys = store.keys

    # --- the consumer group ---

    def ensure_group(self) -> None:
        """Create the group if it does not exist. Id "0": entries the store wrote before the first
        notifier ever started are delivered too."""
        with guard("create outbox group"):
            try:
                self._client.xgroup_create(self.keys.outbox, GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read_own(self, consumer: str, start: str, count: int) -> list[Row]:
        """This consumer's pending entries after `start` ("0": from the first), as a restart finds them."""
        with guard("read outbox"):
            return _rows(self._client.xreadgroup(GROUP, consumer, {self.keys.outbox: start}, count=count))

    def read_new(self, consumer: str, count: int, block_ms: int | None) -> list[Row]:
        """Entries no consumer has read yet, waiting up to `block_ms` for one (None: not at all)."""
        with guard("read outbox"):
            reply = self._client.xreadgroup(
                GROUP, consumer, {self.keys.outbox: ">"}, count=count, block=block_ms
            )
        return _rows(reply)

    def claim_idle(
        self, consumer: str, min_idle_ms: int, cursor: str, count: int
    ) -> tuple[str, list[Row], list[str]]:
        """XAUTOCLAIM: entries another consumer left idle. (next cursor, rows, ids that vanished)."""
        with guard("claim outbox entries"):
            reply: Any = self._client.xautoclaim(
                self.keys.outbox, GROUP, consumer, min_idle_ms, start_id=cursor, count=count
            )
        rows = [(_text(entry_id), _fields(fields)) for entry_id, fields in reply[1]]
        gone = [_text(g) for g in (reply[2] if len(reply) > 2 else ())]
        return _text(reply[0]), rows, gone

    def touch(self, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of entries this consumer still works on, so no other one takes them."""
        with guard("touch outbox entries"):
            self._client.xclaim(self.keys.outbox, GROUP, consumer, 0, list(ids), justid=True)

    def finish(self, entry_id: str) -> None:
        """Acknowledge, delete (XLEN of the outbox is then its depth) and forget, in one transaction."""
        with guard("finish outbox entry"):
            pipe = self._client.pipeline(transaction=True)
            pipe.xack(self.keys.outbox, GROUP, entry_id)
            pipe.xdel(self.keys.outbox, entry_id)
            pipe.delete(self.keys.outbox_progress(entry_id))
            pipe.execute()

    # --- progress of one entry, per channel ---

    def progress(self, entry_id: str) -> Fields:
        """`done:CHANNEL`, `attempts:CHANNEL`, `next:CHANNEL` of an entry (empty when none)."""
        with guard("read outbox progress"):
            raw: Any = self._client.hgetall(self.keys.outbox_progress(entry_id))
        return _fields(raw) or {}

    def mark_done(self, entry_id: str, channel: str) -> None:
        key = self.keys.outbox_progress(entry_id)
        with guard("save outbox progress"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(key, f"done:{channel}", "1")
            pipe.expire(key, STATE_TTL)
            pipe.execute()

    def note_retry(self, entry_id: str, channel: str, attempts: int, next_at: float) -> None:
        with guard("save outbox progress"):
            self._client.hset(
                self.keys.outbox_progress(entry_id),
                mapping={f"attempts:{channel}": str(attempts), f"next:{channel}": repr(next_at)},
            )

    def count(self, result: str, target: str) -> None:
        """One delivery result more for `target` (read back by `delivery_counts`)."""
        with guard("count delivery"):
            self._client.hincrby(self.keys.outbox_stats, f"{result}:{target}", 1)

    # --- dead letters ---

    def dead_letter(self, entry_id: str, record: Mapping[str, str], channel: str) -> None:
        """Copy an entry to the dead letters; with a channel, mark that channel done, in one step."""
        with guard("dead-letter outbox entry"):
            pipe = self._client.pipeline(transaction=True)
            pipe.xadd(self.keys.outbox_dead, dict(record))
            if channel:
                pipe.hset(self.keys.outbox_progress(entry_id), f"done:{channel}", "1")
            pipe.execute()

    def dead_letters(self, count: int) -> list[tuple[str, Fields]]:
        with guard("read dead letters"):
            rows: Any = self._client.xrange(self.keys.outbox_dead, count=count)
        return [(_text(i), _fields(f) or {}) for i, f in rows]

    def requeue(self, dead_id: str, entry: Mapping[str, str]) -> str:
        """Put a dead letter back in the outbox as `entry` and remove it, atomically. The new id."""
        with guard("replay dead letter"):
            pipe = self._client.pipeline(transaction=True)
            pipe.xadd(self.keys.outbox, dict(entry))
            pipe.xdel(self.keys.outbox_dead, dead_id)
            new_id, _ = pipe.execute()
        return _text(new_id)

    # --- Redis Cluster: the per-address pending lists ---

    def relay_pending(self, maxlen: int) -> int:
        """Move the entries the store's scripts left in `{prefix}{address}:notify` lists into the stream.

        Only on a Redis Cluster, where a script may touch one slot only and so cannot XADD to the global
        stream. Each entry is XADDed, then removed from its list: a crash between the two sends it twice
        (same event_id, which receivers dedupe on); it never loses one. Returns the entries moved.
        """
        moved = 0
        with guard("relay outbox lists"):
            for key in self._client.scan_iter(match=self.keys.address_pattern(OUTBOX_SUFFIX), count=1000):
                entries = self._client.lrange(key, 0, 99)
                for raw in entries:
                    flat = json.loads(raw)
                    self._client.xadd(
                        self.keys.outbox,
                        dict(zip(flat[::2], flat[1::2], strict=True)),
                        maxlen=maxlen,
                        approximate=True,
                    )
                    moved += 1
                if entries:
                    self._client.ltrim(key, len(entries), -1)
        return moved

    # --- what /metrics and the report show ---

    def delivery_counts(self) -> list[tuple[tuple[str, str], float]]:
        """(target, result) -> count, as the notifier recorded them: for metrics.NOTIFICATIONS."""
        with guard("read delivery counts"):
            raw: Any = self._client.hgetall(self.keys.outbox_stats)
        out = []
        for field, value in raw.items():
            result, _, target = _text(field).partition(":")
            out.append(((target, result), float(_text(value))))
        return out

    def backlog(self) -> int:
        """Entries the notifiers have not delivered: not yet read by the group, plus read but not
        acknowledged (`bouncekeeper health`)."""
        key = self.keys.outbox
        with guard("read outbox backlog"):
            groups = [g for g in self._client.xinfo_groups(key) if _text(g.get("name")) == GROUP]
            if not groups:
                return int(self._client.xlen(key))  # no notifier ever ran: everything is waiting
            group = groups[0]
            lag = group.get("lag")
            return int(group.get("pending") or 0) + int(lag if lag is not None else self._client.xlen(key))

    def depth(self) -> dict[str, int]:
        """The entries waiting in the outbox and in the dead letters."""
        with guard("read outbox depth"):
            return {
                "outbox": int(self._client.xlen(self.keys.outbox)),
                "dead": int(self._client.xlen(self.keys.outbox_dead)),
            }
