"""`bouncekeeper milter` as a real daemon process (the console command, not an in-process object)."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import time

from tests.support import reachable
from tests.support.postfix import wait_port


class MilterProcess:
    """Writes a TOML config from `toml` (plus state_dir and socket) and runs the daemon on it."""

    def __init__(self, directory: pathlib.Path, socket: str, toml: str, name: str = "milter") -> None:
        self.directory = directory
        self.socket = socket
        self.name = name
        self.config = directory / f"{name}.toml"
        self.stderr = directory / f"{name}.log"
        self.state_dir = directory / f"{name}-state"
        head = f'state_dir = "{self.state_dir}"\n'
        text = head + toml
        if "[milter]" in text:
            text = text.replace("[milter]\n", f'[milter]\nsocket = "{socket}"\nsocket_mode = "0666"\n', 1)
        else:
            text += f'\n[milter]\nsocket = "{socket}"\nsocket_mode = "0666"\n'
        self.config.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def path(self) -> pathlib.Path | None:
        return pathlib.Path(self.socket.removeprefix("unix:")) if self.socket.startswith("unix:") else None

    def start(self) -> MilterProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.path is not None:
            # A socket left by a killed daemon would pass the wait below before the new one listens.
            self.path.unlink(missing_ok=True)
        # From where a milter that drops its privileges ([milter] user) can still import its modules.
        self.proc = subprocess.Popen(
            [reachable.python(), "-m", "bouncekeeper.cli", "--config", str(self.config), "milter"],
            env=reachable.environment(),
            stdout=subprocess.DEVNULL,
            stderr=self.stderr.open("wb"),
        )
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milter {self.name} exited: {self.log()}")
            if self.path is not None:
                if self.path.exists():
                    return self
            else:
                try:
                    wait_port(int(self.socket.split(":")[1].split("@")[0]), timeout=0.1)
                    return self
                except RuntimeError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"milter {self.name} did not open {self.socket}: {self.log()}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, as an init system stops it; returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def stop(self) -> None:
        # pymilter takes ~5 s to leave its accept loop after SIGTERM: tests that do not test shutdown kill.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
