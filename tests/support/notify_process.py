"""`bouncekeeper notify` (or any long-running command) as the operator runs it: a process on a config
file, stopped by SIGTERM."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

from tests.support.postfix import ROOT


class CommandProcess:
    """`bouncekeeper COMMAND` on a config file, its output in `log`, stopped by SIGTERM."""

    def __init__(self, config_file: pathlib.Path, command: str, log: pathlib.Path) -> None:
        self.config_file = config_file
        self.command = command
        self.log_file = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CommandProcess:
        argv = [sys.executable, "-m", "bouncekeeper.cli", "--config", str(self.config_file), self.command]
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, env={**os.environ, "PYTHONPATH": str(ROOT / "milter")}, stdout=out, stderr=out
            )
        return self

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after 15 s; the exit status (negative if killed), None if it was not running."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def wait_log(self, text: str, timeout: float = 15, seen: int = 0) -> None:
        """Wait until `text` is in the log more than `seen` times; fail with the log after `timeout` s."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) <= seen:
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def reload(self) -> None:
        """SIGHUP, as the operator reloads, and wait until the daemon says it re-read its configuration."""
        assert self.proc is not None
        line = "SIGHUP: configuration and keys re-read"
        seen = self.log().count(line)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log(line, seen=seen)


class NotifyProcess(CommandProcess):
    """`bouncekeeper notify` on a config file, stopped by SIGTERM."""

    def __init__(self, config_file: pathlib.Path, log: pathlib.Path) -> None:
        super().__init__(config_file, "notify", log)
