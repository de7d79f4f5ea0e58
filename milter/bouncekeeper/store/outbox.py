"""The notifier's keys in Redis: the outbox stream, its dead letters and delivery counts.

The store writes the outbox entries (record.lua, admin.lua); `notify.py` delivers them. Every read and
write of these keys goes through `Outbox`, and every Redis failure becomes `StoreUnavailable`.
"""

from __future__ import annotations

from typing import Any

from bouncekeeper.store.redis_store import Store, _guard


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Outbox:
    """The outbox stream `{prefix}{outbox}:stream` and its companions, on the store's connection."""

    def __init__(self, store: Store) -> None:
        self.client: Any = store.client
        self.keys = store.keys

    def delivery_counts(self) -> list[tuple[tuple[str, str], float]]:
        """(target, result) -> count, as the notifier recorded them: for metrics.NOTIFICATIONS."""
        with _guard("read delivery counts"):
            raw: Any = self.client.hgetall(self.keys.outbox_stats)
        out = []
        for field, value in raw.items():
            result, _, target = _text(field).partition(":")
            out.append(((target, result), float(_text(value))))
        return out

    def depth(self) -> dict[str, int]:
        """The entries waiting in the outbox and in the dead letters."""
        with _guard("read outbox depth"):
            return {
                "outbox": int(self.client.xlen(self.keys.outbox)),
                "dead": int(self.client.xlen(self.keys.outbox_dead)),
            }
