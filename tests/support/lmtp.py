"""Run bouncekeeper's LMTP listener in a background thread (its own event loop), for tests and benchmarks."""

from __future__ import annotations

import asyncio
import pathlib
import smtplib
import threading
import time

from bouncekeeper import config
from bouncekeeper.daemons.lmtpd import Listener
from bouncekeeper.service.bounces import Service
from tests.support.exim import wait_for_port
from tests.support.notify_process import CommandProcess

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
BOUNCE_DOMAIN = "bounce.example.net"


def settings_for(
    directory: pathlib.Path,
    redis_url: str,
    *,
    mode: str = "observe",
    listen: str = "127.0.0.1:0",
    lmtp: str = "",
    extra: str = "",
    redis: str = "",
) -> config.Settings:
    """Settings with a VERP key under `directory`, the given Redis, and short Redis timeouts; `redis`:
    more lines of the [redis] table."""
    key = directory / "verp.key"
    if not key.exists():
        key.write_text(SECRET + "\n")
        key.chmod(0o644)
    text = f"""
state_dir = "{directory}"
[verp]
bounce_domain = "{BOUNCE_DOMAIN}"
secret_files = ["{key}"]
[redis]
url = "{redis_url}"
socket_timeout = 0.5
connect_timeout = 0.5
retries = 0
{redis}
[policy]
mode = "{mode}"
[lmtp]
listen = "{listen}"
{lmtp}
{extra}
"""
    return config.loads(text, name=str(directory / "bk.toml"))


class ListenerThread:
    """The real Listener on 127.0.0.1 (ports chosen by the kernel), stopped with stop()."""

    def __init__(self, service: Service, settings: config.Settings) -> None:
        self.service = service
        self.settings = settings
        self.listener = Listener(service, settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bk-listener", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.listener.start()
            finally:
                self._ready.set()
            await self._stop.wait()
            await self.listener.stop()

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread by start()/stop()
            self._error = exc
            self._ready.set()

    def start(self) -> ListenerThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    @property
    def lmtp_address(self) -> tuple[str, int] | str:
        return self.listener.addresses[0]

    def lmtp_client(self, timeout: float = 10) -> smtplib.LMTP:
        """A plain smtplib client on the listener's TCP LMTP address, as the MTA in front connects."""
        address = self.lmtp_address
        assert isinstance(address, tuple)
        host, port = address
        return smtplib.LMTP(host, port, timeout=timeout)

    @property
    def smtp_address(self) -> tuple[str, int]:
        address = self.listener.addresses[1]
        assert isinstance(address, tuple)
        return address

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._error is not None:
            raise self._error


class ListenerProcess(CommandProcess):
    """`bouncekeeper lmtp` as the operator runs it: a process on a config file, stopped by SIGTERM.

    `listen` is the config's `[lmtp] listen` ("unix:/path" or "HOST:PORT"): start() waits until it answers.
    """

    def __init__(self, config_file: pathlib.Path, listen: str, log: pathlib.Path) -> None:
        super().__init__(config_file, "lmtp", log)
        self.listen = listen

    def start(self) -> ListenerProcess:
        super().start()
        assert self.proc is not None
        if not self.listen.startswith("unix:"):
            wait_for_port(int(self.listen.rpartition(":")[2]), timeout=15, proc=self.proc)
            return self
        path = pathlib.Path(self.listen.removeprefix("unix:"))
        deadline = time.monotonic() + 15
        while not path.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the LMTP listener did not start:\n{self.log()}")
            time.sleep(0.02)
        return self
