"""A private redis-server for the tests, on a unix socket under a temp dir.

Started by the test suite itself (never a mock); stopped by PID. `stop()`/`start()` let a test show what
happens while Redis is down and after it comes back, on the same socket and data.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import time

import redis


class RedisServer:
    def __init__(self, directory: pathlib.Path, *, port: int = 0, extra: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}?db=0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it: scripts/sysdeps.sh)")
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", str(self.socket),
            "--unixsocketperm", "777", "--dir", str(self.directory), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning", *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis.from_url(self.url)
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        self.socket.unlink(missing_ok=True)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)
