"""The embedded default: with `[redis] url` empty, bouncekeeper runs its own redis-server.

It listens on a unix socket under `state_dir/redis/` (no TCP port at all), keeps an append-only file
there and is supervised: if it dies, it is started again on the same data. `appendfsync everysec` by
default: a crash of the machine loses at most the last second, a crash of bouncekeeper or redis-server
nothing; `[redis] embedded_fsync = "always"` loses nothing. A lock file makes one process the supervisor;
other processes (the CLI while the milter runs) only attach to the socket. A redis-server left running by
a supervisor that was killed is attached to, not duplicated: redis-server would otherwise unlink the live
socket and take it over.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bouncekeeper.log import get_logger
from bouncekeeper.store.errors import StoreUnavailable

log = get_logger(__name__)

START_TIMEOUT = 10.0
# A redis-server that keeps dying is restarted at most this often (its log says why).
RESTART_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)


class RootRefused(Exception):
    """Root asked to start the embedded redis-server: refused unless the config allows it."""


class EmbeddedRedis:
    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        binary: str | None = None,
        fsync: str = "everysec",
        allow_root: bool = False,
    ) -> None:
        self.allow_root = allow_root
        self.directory = pathlib.Path(state_dir) / "redis"
        self.socket = self.directory / "redis.sock"
        self.binary = binary
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def owner(self) -> bool:
        """True when this process started (and will stop) the redis-server."""
        return self.proc is not None

    def alive(self) -> bool:
        # No retries: redis-py's default Retry would turn each "not yet" into a second of backoff.
        client = redis.Redis(
            unix_socket_path=str(self.socket),
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        except (redis.exceptions.RedisError, OSError):
            return False
        finally:
            client.close()

    def start(self, *, supervise: bool = False) -> None:
        """Attach to the running server, or start one (and with `supervise`, restart it if it dies)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if len(str(self.socket)) > 100:
            raise StoreUnavailable(f"state_dir too long for a unix socket path: {self.socket}")
        lock = (self.directory / "supervisor.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Another bouncekeeper supervises: use its server.
            lock.close()
            self._wait_alive()
            return
        self._lock = lock
        if self.alive():
            log.info("embedded redis: attaching to the server already running on %s", self.socket)
            return
        if os.geteuid() == 0 and not self.allow_root:
            # Attaching (above) is fine; a root-owned server and files in the daemons' folder are not.
            self.stop()
            raise RootRefused(
                f"no embedded redis-server is running under {self.directory}, and root does not start one:"
                " set [redis] url (or run the daemons first, as their own user)"
            )
        self._spawn(supervise)
        if supervise:
            self._watcher = threading.Thread(target=self._watch, name="embedded-redis", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        """Stop the server if this process started it (redis-server writes its AOF out on SIGTERM)."""
        self._stopping.set()
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.error("embedded redis did not stop in 15 s; killing it")
                proc.kill()
                proc.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _argv(self) -> list[str]:
        binary = self.binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        if not pathlib.Path(binary).exists():
            raise StoreUnavailable("redis-server is not installed (scripts/sysdeps.sh installs it)")
        return [
            binary,
            "--port", "0",  # no TCP at all: only the unix socket below
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            "--loglevel", "notice",
        ]  # fmt: skip

    def _spawn(self, supervise: bool = True) -> None:
        # A new session: a Ctrl-C meant for bouncekeeper must not stop the store under it; stop() does.
        self.proc = subprocess.Popen(
            self._argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        # INFO for the daemons; a CLI command that starts it for itself should not chatter.
        log.log(logging.INFO if supervise else logging.DEBUG, "embedded redis: started pid %s on %s",
                self.proc.pid, self.socket)  # fmt: skip
        self._wait_alive(self.proc)

    def _wait_alive(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.alive():
            if proc is not None and proc.poll() is not None:
                raise StoreUnavailable(
                    f"embedded redis-server exited with {proc.returncode}; see {self.directory / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"embedded redis-server not answering on {self.socket}")
            time.sleep(0.02)

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
            log.error("embedded redis-server exited with %s; restarting in %.1f s", code, delay)
            failures += 1
            if self._stopping.wait(delay):
                return
            try:
                self._spawn()
                failures = 0 if self.alive() else failures
            except StoreUnavailable as exc:
                log.error("embedded redis restart failed: %s", exc)
