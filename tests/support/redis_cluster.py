"""A private Redis Cluster of three masters on free 127.0.0.1 ports, started and stopped by the tests.

Three `redis-server --cluster-enabled yes` processes joined with `redis-cli --cluster create ...
--cluster-replicas 0 --cluster-yes`; with `replicas=1`, six, and each master gets
a replica that takes its slots over when it dies. Stopped by PID.
"""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import time

import redis
from redis.cluster import RedisCluster


def free_port() -> int:
    # Cluster bus port = port + 10000 must be free too; pick ports low enough for that.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisClusterServers:
    def __init__(
        self, directory: pathlib.Path, masters: int = 3, *, replicas: int = 0, extra: tuple[str, ...] = ()
    ) -> None:
        self.directory = directory
        self.replicas = replicas
        self.masters = masters
        self.ports = [free_port() for _ in range(masters * (1 + replicas))]
        self.extra = extra
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        for port in self.ports:
            self.procs.append(self._spawn(binary, port))
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p).ping())
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p).cluster("info").get("cluster_state") == "ok")
        self._replicating()

    def _replicating(self) -> None:
        """With replicas: each one a replica, synced, and acknowledging its master's writes."""
        if not self.replicas:
            return
        # A node `--cluster create` made a replica may still say "master" for a moment: wait until
        # every replica says so and has its master's data (a WAIT then finds each master's replicas).
        self._wait(
            lambda: sum(1 for p in self.ports if self.role(p) == "slave") == len(self.ports) - self.masters
        )
        for port in self.ports:
            self._wait(lambda p=port: self._synced(p))
        self._acknowledged()

    def _synced(self, port: int) -> bool:
        """A replica whose link to its master is up (it holds the master's data), or a master whose
        replicas are all online on its side too: until a replica's first acknowledgement after the sync
        (Redis 7 puts it online then, up to a second later), a WAIT does not count it."""
        info = redis.Redis(port=port, decode_responses=True).info("replication")
        if info["role"] != "master":
            return info.get("master_link_status") == "up"
        replicas = [v for key, v in info.items() if key.startswith("slave") and isinstance(v, dict)]
        return len(replicas) == self.replicas and all(r.get("state") == "online" for r in replicas)

    def _acknowledged(self) -> None:
        """A write and a WAIT on each master: a replica just synced may first acknowledge on its next
        replication tick (up to a second later), and a test's first WAIT must not meet that."""
        cluster = self.client()
        masters: set[str] = set()
        for n in range(10_000):
            key = f"bk-warm-up-{n}"
            node = cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            if node.name in masters:
                continue
            masters.add(node.name)
            with redis.Redis(port=node.port, single_connection_client=True) as master:
                master.set(key, 1)
                master.delete(key)
                if int(master.execute_command("WAIT", self.replicas, 30_000)) < self.replicas:
                    raise RuntimeError(f"redis cluster: the replicas of {node.name} do not acknowledge")
            if len(masters) == self.masters:
                break
        cluster.close()

    def role(self, port: int) -> str:
        role: str = redis.Redis(port=port, decode_responses=True).info("replication")["role"]
        return role

    def kill_port(self, port: int) -> None:
        """SIGKILL the node on this port (a crash), whatever its place in `procs`."""
        self.kill(self.ports.index(port))

    def _spawn(self, binary: str, port: int) -> subprocess.Popen[bytes]:
        node = self.directory / str(port)
        node.mkdir(parents=True, exist_ok=True)
        argv = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
            "--cluster-config-file", str(node / "nodes.conf"), "--dir", str(node), "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", *self.extra,
        ]  # fmt: skip
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, n: int) -> None:
        """SIGKILL master n (a crash: no goodbye to the other nodes)."""
        self.procs[n].kill()
        self.procs[n].wait(timeout=10)

    def restart(self, n: int) -> None:
        """Node n again, on its port and nodes.conf: it rejoins with its slots (its data is gone:
        no persistence here) and the cluster is waited on until every node says ok (and, with
        replicas, until every replica has resynced and acknowledges)."""
        self.procs[n] = self._spawn(shutil.which("redis-server") or "redis-server", self.ports[n])
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p).cluster("info").get("cluster_state") == "ok")
        self._replicating()

    def _wait(self, ready: object) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                if ready():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not come up")
            time.sleep(0.05)

    def client(self) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.ports[0])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.procs = []
