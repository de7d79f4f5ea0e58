"""A private Redis Sentinel set-up on 127.0.0.1: one master, one replica, three sentinels.

Debian's redis-sentinel is `redis-server --sentinel` on a config file the sentinel rewrites as it learns
(scripts/sysdeps.sh installs the package; only redis-server's binary is run). Short timeouts, so that a
killed master is replaced within a few seconds (production keeps Sentinel's 30 s down-after). Every
process is stopped by PID.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import time

import redis

from tests.support.redis_cluster import free_port

SERVICE = "bk"


class RedisSentinels:
    def __init__(
        self,
        directory: pathlib.Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 500,
        username: str = "",
        password: str = "",
        sentinel_password: str = "",
    ) -> None:
        """`username`/`password`: an ACL user on master and replicas (the default user off), which the
        replicas and sentinels use too; `sentinel_password`: the sentinels' own requirepass."""
        self.directory = directory
        self.ports = [free_port() for _ in range(1 + replicas)]  # redis-servers; ports[0] the first master
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.down_after_ms = down_after_ms
        self.username = username
        self.password = password
        self.sentinel_password = sentinel_password
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}?db=0"

    def _binary(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/sysdeps.sh)")
        return binary

    def start(self) -> None:
        for n, port in enumerate(self.ports):
            self.start_server(port, replica_of=None if n == 0 else self.ports[0])
        for port in self.ports[1:]:
            self._wait(lambda p=port: self.info(p, "replication").get("master_link_status") == "up")
        for port in self.sentinel_ports:
            self.sentinels.append(self._spawn_sentinel(port))
        # Every sentinel knows the master and has found the others (a quorum can only form then).
        for port in self.sentinel_ports:
            self._wait(lambda p=port: self._sentinel_sees_peers(p))

    def start_server(self, port: int, *, replica_of: int | None) -> None:
        node = self.directory / str(port)
        node.mkdir(parents=True, exist_ok=True)
        argv = [
            self._binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node), "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        if self.username:
            argv += [
                # One argument per word: redis-server joins them into the config line.
                "--user", self.username, "on", f">{self.password}", "~*", "&*", "+@all",
                "--user", "default", "off",
                "--masteruser", self.username, "--masterauth", self.password,
            ]  # fmt: skip
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.servers[port] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(lambda: self.client(port).ping())

    def _spawn_sentinel(self, port: int) -> subprocess.Popen[bytes]:
        node = self.directory / f"sentinel-{port}"
        node.mkdir(parents=True, exist_ok=True)
        conf = node / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {node}\nloglevel warning\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.ports[0]} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
        )
        with conf.open("a") as out:
            if self.username:
                out.write(f"sentinel auth-user {SERVICE} {self.username}\n")
                out.write(f"sentinel auth-pass {SERVICE} {self.password}\n")
            if self.sentinel_password:
                out.write(f"requirepass {self.sentinel_password}\n")
                out.write(f"sentinel sentinel-pass {self.sentinel_password}\n")
        argv = [self._binary(), str(conf), "--sentinel"]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _sentinel_sees_peers(self, port: int) -> bool:
        with self.sentinel(port) as s:
            master = s.sentinel_master(SERVICE)
        return int(master["num-other-sentinels"]) >= len(self.sentinel_ports) - 1 and bool(
            int(master["num-slaves"])
        )

    def info(self, port: int, section: str) -> dict[str, object]:
        with self.client(port) as r:
            info: dict[str, object] = r.info(section)
        return info

    def master(self) -> int:
        """The port of the master the sentinels name now."""
        with self.sentinel(self.sentinel_ports[0]) as s:
            _, port = s.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def kill(self, port: int) -> None:
        """SIGKILL this redis-server (a crash: no goodbye to the sentinels or the replica)."""
        proc = self.servers.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def wait_for_new_master(self, old: int, timeout: float = 30) -> int:
        """Until the sentinels name another master, and it answers as one; its port."""
        found: list[int] = []

        def promoted() -> bool:
            port = self.master()
            if port != old and self.info(port, "replication").get("role") == "master":
                found.append(port)
                return True
            return False

        self._wait(promoted, timeout)
        return found[-1]

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2,
            username=self.username or None, password=self.password or None,
        )  # fmt: skip

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2,
            password=self.sentinel_password or None,
        )  # fmt: skip

    def failover(self) -> None:
        """A coordinated failover (SENTINEL FAILOVER): the master is demoted alive, a replica promoted."""
        with self.sentinel(self.sentinel_ports[0]) as s:
            s.sentinel_failover(SERVICE)

    def _wait(self, ready: object, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():  # type: ignore[operator]
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis sentinel set-up did not reach the expected state")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in [*self.sentinels, *self.servers.values()]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.sentinels = []
        self.servers = {}
