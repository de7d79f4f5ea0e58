"""A private Exim 4.96 (Debian's binary, unpacked by scripts/exim-unpack.sh) and smtp-sink, on 127.0.0.1.

Exim runs from a wrapper config that defines the macros and `.include`s exim/exim4.conf.example, so
the tests exercise the shipped file itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.parser
import os
import pathlib
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping

from tests.support import reachable
from tests.support.postfix import finished_dumps

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "exim" / "exim4.conf.example"
UNPACK = ROOT / "scripts" / "exim-unpack.sh"
EXIM_USER = "Debian-exim"


def exim_binary() -> pathlib.Path:
    """The unpacked exim4 binary (unpacked on first use; needs apt sources and, for the user, root), where
    Debian-exim can execute it again (tests/support/reachable.py)."""
    env = dict(os.environ, EXIM_ROOT=str(reachable.root() / "var" / "mta" / "exim4"))
    out = subprocess.run([str(UNPACK)], check=True, capture_output=True, text=True, timeout=300, env=env)
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def scratch_dir(prefix: str) -> pathlib.Path:
    """A short, world-traversable temp dir: Exim delivers as Debian-exim and must reach sockets and keys."""
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def run_exim(
    binary: pathlib.Path, config: pathlib.Path, *args: str, stdin: str = "", timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """One Exim command (-bV, -bt, -bh ...) on a configuration file, its output captured."""
    return subprocess.run(
        [str(binary), "-C", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclasses.dataclass(frozen=True)
class SinkMessage:
    sender: str
    recipients: tuple[str, ...]
    raw: bytes


class SmtpSink:
    """Postfix's smtp-sink as a remote MX: one dump file per message; `reject_rcpt` refuses every RCPT."""

    def __init__(self, directory: pathlib.Path, *, reject_rcpt: str | None = None) -> None:
        self.dir = directory / "dump"
        self.dir.mkdir(parents=True)
        shutil.chown(self.dir, "postfix")
        self.port = free_port()
        self.reject_rcpt = reject_rcpt
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["smtp-sink", "-u", "postfix", "-d", f"{self.dir}/%H%M%S."]
        if self.reject_rcpt:
            argv += ["-f", "RCPT", "-B", self.reject_rcpt]
        self.proc = subprocess.Popen([*argv, f"127.0.0.1:{self.port}", "64"])
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def messages(self) -> list[SinkMessage]:
        found = []
        for path in finished_dumps(self.dir, self.proc):
            raw = path.read_bytes()
            head = email.parser.BytesHeaderParser().parsebytes(raw)
            found.append(
                SinkMessage(
                    sender=str(head.get("X-Mail-Args", "")).split()[0].strip("<>")
                    if head.get("X-Mail-Args")
                    else "",
                    recipients=tuple(str(v).split()[0].strip("<>") for v in head.get_all("X-Rcpt-Args", [])),
                    raw=raw,
                )
            )
        return found

    def clear(self) -> None:
        for path in self.dir.iterdir():
            path.unlink()


class Exim:
    """Exim's daemon from a wrapper config around exim/exim4.conf.example; stopped by its PID.

    `site_config` instead: an operator's own whole configuration, written by the caller from
    `site_settings()` (spool, log, port) after this object chose them; `self.config` is then that file.
    """

    def __init__(
        self, directory: pathlib.Path, macros: Mapping[str, str], *, site_config: pathlib.Path | None = None
    ) -> None:
        self.binary = exim_binary()
        self.dir = directory
        self.spool = directory / "spool"
        (self.spool / "log").mkdir(parents=True)
        if os.geteuid() == 0:
            uid = pwd.getpwnam(EXIM_USER).pw_uid
            for path in (self.spool, self.spool / "log"):
                os.chown(path, uid, -1)
        self.port = free_port()
        base = {
            "BK_EXIM_PATH": str(self.binary),
            "BK_SPOOL": str(self.spool),
            "BK_SMTP_PORT": str(self.port),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        if site_config is not None:
            self.config = site_config
            return
        lines = [f"{name} = {value}" for name, value in {**base, **macros}.items()]
        self.config = directory / "exim.conf"
        # Exim reads it again as Debian-exim: the copy that user can reach.
        example = reachable.root() / EXAMPLE.relative_to(ROOT)
        self.config.write_text("\n".join([*lines, f".include {example}", ""]))

    def site_settings(self) -> str:
        """The main-section lines a private instance needs, for an operator's own configuration file."""
        return (
            f"exim_path = {self.binary}\nspool_directory = {self.spool}\n"
            f"log_file_path = {self.spool}/log/%slog\npid_file_path = {self.spool}/exim.pid\n"
            f"daemon_smtp_ports = {self.port}\nlocal_interfaces = 127.0.0.1\n"
            "host_lookup =\ntls_advertise_hosts =\nkeep_environment =\n"
        )

    def run(self, *args: str, stdin: str = "", timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run_exim(self.binary, self.config, *args, stdin=stdin, timeout=timeout)

    def start(self) -> None:
        # -bdf: the daemon in the foreground (our child, stopped by PID); -q1s retries deferred mail soon.
        self.proc = subprocess.Popen([str(self.binary), "-C", str(self.config), "-bdf", "-q1s"])
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def mainlog(self) -> str:
        path = self.spool / "log" / "mainlog"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """The first mainlog line matching `pattern` (a regex), waiting for it to appear."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.MULTILINE)
        while True:
            match = regex.search(self.mainlog())
            if match:
                return match
            if time.monotonic() > deadline:
                raise TimeoutError(f"no mainlog line matches {pattern!r}:\n{self.mainlog()}")
            time.sleep(0.05)
