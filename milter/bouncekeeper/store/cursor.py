"""Where `bouncekeeper imap` stopped in one mailbox folder: its UIDVALIDITY and the highest UID done,
and the lock that keeps two runs on that folder from overlapping."""

from __future__ import annotations

from typing import Any

from bouncekeeper.store.errors import guard
from bouncekeeper.store.redis_store import Store
from bouncekeeper.store.runlock import RunLock


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FolderCursor:
    """The UID state and the run lock of one folder, named "user@server/folder"."""

    def __init__(self, store: Store, folder: str, lock_ttl: int) -> None:
        self.store = store
        self.key = store.keys.imap_cursor(folder)
        self.lock = RunLock(store, store.keys.imap_lock(folder), lock_ttl)

    def acquire(self) -> None:
        self.lock.acquire()

    def release(self) -> None:
        self.lock.release()

    def load(self) -> tuple[int, int]:
        """(UIDVALIDITY, last UID done); (0, 0) for a folder never scanned."""
        with guard("read imap cursor"):
            raw: Any = self.store._client.hgetall(self.key)
        data = {_text(k): _text(v) for k, v in raw.items()}
        return int(data.get("uidvalidity", "0")), int(data.get("last_uid", "0"))

    def save(self, uidvalidity: int, last_uid: int) -> None:
        with guard("save imap cursor"):
            self.store._client.hset(
                self.key, mapping={"uidvalidity": str(uidvalidity), "last_uid": str(last_uid)}
            )
