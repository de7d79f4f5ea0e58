"""The store's connection to Redis: the client, the key schema, the Lua scripts loaded on it, pipelines and
batches, and the stream and outbox helpers that the write paths share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis.exceptions
from redis.cluster import RedisCluster

from bouncekeeper.config import RedisSettings
from bouncekeeper.store import keys as k
from bouncekeeper.store.batch import Batch
from bouncekeeper.store.client import Client, close_client
from bouncekeeper.store.errors import log
from bouncekeeper.store.scripts import sha1, sources


class Connection:
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
        self._client: Any = client
        self.settings = settings or RedisSettings()
        self.keys = k.Keys(self.settings.prefix)
        self.cluster = isinstance(client, RedisCluster)
        self._on_close = on_close
        self._sources = sources()
        self._shas = {name: sha1(source) for name, source in self._sources.items()}

    def close(self) -> None:
        close_client(self._client)
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    # --- scripts ---

    def _load_scripts(self) -> None:
        for name, source in self._sources.items():
            self._client.script_load(source)
            log.debug("loaded %s.lua", name)

    def _pipeline(self) -> Any:
        """A non-transactional pipeline; on a Cluster it routes EVALSHA by its keys without asking first
        (redis-py 8.2 hands it the client's policy resolver, client.py's _ScriptPolicies)."""
        return self._client.pipeline(transaction=False)

    def _batch(self, *, replicated: bool = False) -> Batch:
        return Batch(self, replicated=replicated)

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
            return self._evalsha(self._client, name, keys, args)
        except redis.exceptions.NoScriptError:
            self._load_scripts()
            return self._evalsha(self._client, name, keys, args)

    # --- what the write paths share ---

    def _outbox_key(self, address: str) -> str:
        # A script touches one cluster slot: on a cluster, the address's own pending list (notify.py).
        return self.keys.address(address, k.OUTBOX) if self.cluster else self.keys.outbox

    @property
    def _outbox_mode(self) -> str:
        """How the scripts write the outbox: to the stream, or on a Cluster to the address's own list."""
        return "list" if self.cluster else "stream"

    def _xadd(self, pipe: Any, kind: str, address: str, event_json: str) -> int:
        """A stream entry: `kind` and `address` as fields for cheap filtering, the rest as JSON in `event`.
        Returns its position in the pipeline's replies (the reply is the entry's ID)."""
        fields = {"kind": kind, "address": address, "event": event_json}
        at = len(pipe)
        pipe.xadd(self.keys.stream, fields, maxlen=self.settings.stream_size, approximate=True)
        return at
