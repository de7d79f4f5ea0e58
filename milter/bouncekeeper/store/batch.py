"""A batch of commands in one pipeline: its script calls sent again after NOSCRIPT, and WAIT for replicas
after its writes, on the connection that carried them (one WAIT per master on a Cluster)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from bouncekeeper.store.errors import StoreUnavailable

if TYPE_CHECKING:
    from bouncekeeper.store.connection import Connection


class Batch:
    """A non-transactional pipeline that remembers its script calls.

    When Redis answers NOSCRIPT (it restarted and forgot the scripts), the scripts are loaded and only
    the script calls that failed are sent again: the other commands of the batch (stream entries,
    counters) already ran and must not run twice.
    """

    def __init__(self, store: Connection, *, replicated: bool = False) -> None:
        self.store = store
        self.pipe: Any = store._pipeline()
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
            again: Any = self.store._pipeline()
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
        client = self.store._client
        run_requested_refresh(client)  # redis-py runs it as the batch starts: here, before routing
        writes = queued(pipe)
        routed = _nodes(client, writes)
        for node in {node.name: node for node in routed}.values():
            pipe.execute_command("WAIT", *self._wait_args(), target_nodes=node)
        pipe.retry = Retry(NoBackoff(), 0)
        try:
            replies: list[Any] = pipe.send_cluster_commands(
                queued(pipe), raise_on_error=False, allow_redirections=False
            )
        finally:
            pipe.reset()
        if any(isinstance(r, (redis.exceptions.MovedError, redis.exceptions.AskError)) for r in replies):
            request_refresh(client)  # run by the next batch, before it routes
        if [n.name for n in _nodes(client, writes)] != [n.name for n in routed]:
            raise StoreUnavailable("record bounce: the cluster's slot map changed while it was written")
        return replies

    def _check(self, acks: list[Any]) -> None:
        """Fewer replicas than wait_replicas hold the writes: the master has them, but would lose them if
        it died now. A tempfail: the MTA sends the bounce again, and the store counts it once."""
        wanted = self.store.settings.wait_replicas
        for acked in acks:
            if int(acked) < wanted:
                raise StoreUnavailable(f"record bounce: {acked} of {wanted} replicas acknowledged in time")


def _nodes(client: Any, commands: list[Any]) -> list[Any]:
    """The master each queued command goes to, as the ClusterPipeline routes it (by the slot of its keys;
    the store's client never reads from replicas)."""
    return [client.nodes_manager.get_node_from_slot(client.determine_slot(*c.args)) for c in commands]


# --- redis-py internals ----------------------------------------------------------------------------
# The Cluster WAIT path needs three things redis-py (8.2) offers no public API for: the commands queued in
# a ClusterPipeline (its public send_cluster_commands takes them, but only its private execution strategy
# holds them), and running or requesting the topology refresh that its own command loops run before they
# route. They are used here only; `missing_internals` names any that a redis-py upgrade took away, and
# tests/store/test_store.py (test_the_redis_py_internals_of_the_cluster_wait_are_there) fails loudly on it.


def queued(pipe: Any) -> list[Any]:
    """The commands queued in a ClusterPipeline, in order."""
    return list(pipe._execution_strategy.command_queue)


def run_requested_refresh(client: Any) -> None:
    """Run a topology refresh an earlier MOVED or ASK requested, as redis-py does before it routes."""
    manager = client.nodes_manager
    if manager._refresh_requested:
        manager._run_requested_refresh(client.retry)


def request_refresh(client: Any) -> None:
    """Ask for a topology refresh, run by the next batch before it routes."""
    client.nodes_manager._request_refresh()


def missing_internals(client: Any) -> list[str]:
    """The redis-py internals above that this Cluster client (and its pipeline) lacks."""
    manager = client.nodes_manager
    pipe = client.pipeline(transaction=False)
    wanted = {
        "ClusterPipeline._execution_strategy.command_queue": (
            isinstance(getattr(getattr(pipe, "_execution_strategy", None), "command_queue", None), list)
        ),
        "NodesManager._refresh_requested": isinstance(getattr(manager, "_refresh_requested", None), bool),
        "NodesManager._run_requested_refresh": callable(getattr(manager, "_run_requested_refresh", None)),
        "NodesManager._request_refresh": callable(getattr(manager, "_request_refresh", None)),
    }
    return [name for name, present in wanted.items() if not present]
