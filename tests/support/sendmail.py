"""A private Sendmail 8.17 (Debian's binary, unpacked, not installed) on 127.0.0.1, for MTA tests.

`scripts/fetch-sendmail.sh` unpacks the binary; the config is built with m4 from a small test .mc that
`include`s the shipped `sendmail/bouncekeeper.mc` (socket path adapted), so the tested snippet is the one
an operator pastes. What Sendmail needs here: a dotted hostname (in a private UTS namespace), a socket
folder that is not world-writable, and `swaks --pipe` for -bs.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import subprocess
import time

from tests.support.postfix import ROOT, free_port, wait_port

SNIPPET = ROOT / "sendmail" / "bouncekeeper.mc"
SHIPPED_SOCKET = "unix:/run/bouncekeeper/milter.sock"
# The LMTP listener's socket (the mailer's A=FILE) and the bounce domain routed to it, as shipped.
SHIPPED_LMTP_SOCKET = "/run/bouncekeeper/lmtp.sock"
SHIPPED_BOUNCE_DOMAIN = "`bounces.example.org'"
FETCH = ROOT / "scripts" / "fetch-sendmail.sh"


def unpacked() -> pathlib.Path | None:
    """The unpacked Sendmail tree (fetched on first use), or None when it cannot be had."""
    dest = ROOT / ".cache" / "sendmail"
    if not (dest / "usr/libexec/sendmail/sendmail").exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return None
        done = subprocess.run(
            [str(FETCH), str(dest)], capture_output=True, text=True, check=False, timeout=300
        )
        if done.returncode != 0:
            return None
    return dest


class Sendmail:
    mc_name = "test.mc"  # the .mc's name in `directory`

    def __init__(
        self,
        directory: pathlib.Path,
        tree: pathlib.Path,
        *,
        relay_port: int,
        milter_socket: str,
        lmtp_socket: str = SHIPPED_LMTP_SOCKET,
        bounce_domain: str = "bounces.example.org",
    ) -> None:
        self.directory = directory
        self.tree = tree
        self.relay_port = relay_port
        self.milter_socket = milter_socket
        self.lmtp_socket = lmtp_socket
        self.bounce_domain = bounce_domain
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> pathlib.Path:
        return self.directory / "sendmail.pid"

    # The instance's .mc: the fixed part here, what a test changes in the three hooks below.
    def timeouts_mc(self) -> str:
        return "define(`confTO_QUEUERETURN', `5d')dnl\n"

    def relay_mc(self) -> str:
        """Who may relay through it: anyone (the tests' clients are all on 127.0.0.1 anyway)."""
        return "FEATURE(`promiscuous_relay')dnl\n"

    def extra_mc(self) -> str:
        """Lines after DAEMON_OPTIONS: here the shipped snippet, its socket paths and domain adapted."""
        snippet = SNIPPET.read_text()
        for shipped, ours in (
            (SHIPPED_SOCKET, self.milter_socket),
            (SHIPPED_LMTP_SOCKET, self.lmtp_socket),
            (SHIPPED_BOUNCE_DOMAIN, f"`{self.bounce_domain}'"),
        ):
            assert shipped in snippet, f"{shipped} is no longer in {SNIPPET}"
            snippet = snippet.replace(shipped, ours)
        (self.directory / "bouncekeeper.mc").write_text(snippet)
        return f"include(`{self.directory}/bouncekeeper.mc')dnl\n"

    def after_compile(self, cf: pathlib.Path) -> None:
        """Work that needs the compiled sendmail.cf (makemap reads it for TrustedUser)."""

    def configure(self) -> pathlib.Path:
        d = self.directory
        for sub in ("queue", "mqueue-client"):
            (d / sub).mkdir(parents=True, exist_ok=True)
            (d / sub).chmod(0o700)
        (d / "aliases").write_text("postmaster: root\n")
        (d / "statistics").touch()
        cf_dir = self.tree / "usr/share/sendmail/cf"
        mc = f"""\
divert(-1)
divert(0)dnl
VERSIONID(`bouncekeeper test instance')dnl
OSTYPE(`linux')dnl
define(`confPID_FILE', `{d}/sendmail.pid')dnl
define(`QUEUE_DIR', `{d}/queue')dnl
define(`confMSP_QUEUE_DIR', `{d}/mqueue-client')dnl
define(`ALIAS_FILE', `{d}/aliases')dnl
define(`STATUS_FILE', `{d}/statistics')dnl
define(`confHOST_STATUS_DIRECTORY', `')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
dnl The sandbox lives under /tmp (world-writable, sticky): trust the sticky bit for the socket path.
define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl
define(`confDELIVERY_MODE', `background')dnl
{self.timeouts_mc()}define(`SMART_HOST', `[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {self.relay_port}')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {self.relay_port}')dnl
define(`SMTP_MAILER_ARGS', `TCP $h {self.relay_port}')dnl
FEATURE(`no_default_msa')dnl
{self.relay_mc()}FEATURE(`accept_unresolvable_domains')dnl
DAEMON_OPTIONS(`Port={self.port}, Addr=127.0.0.1, Name=MTA')dnl
{self.extra_mc()}MAILER(`smtp')dnl
"""
        (d / self.mc_name).write_text(mc)
        cf = subprocess.run(
            ["m4", f"-D_CF_DIR_={cf_dir}/", str(cf_dir / "m4/cf.m4"), str(d / self.mc_name)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        (d / "sendmail.cf").write_text(cf)
        self.after_compile(d / "sendmail.cf")
        return d / "sendmail.cf"

    def _argv(self, *args: str) -> list[str]:
        return [
            *self.command(), "-C", str(self.directory / "sendmail.cf"), *args,
            "-X", str(self.directory / "traffic.log"),
        ]  # fmt: skip

    def command(self) -> list[str]:
        """The sendmail binary, run with a dotted host name (see the module's docstring)."""
        binary = self.tree / "usr/libexec/sendmail/sendmail"
        return [
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            'hostname mta.example.test && exec "$@"',
            "sh",
            str(binary),
        ]

    def test_mode(self, commands: str) -> str:
        """Sendmail's rule-testing mode (-bt) on the built .cf: what it prints for `commands`."""
        argv = [*self.command(), "-C", str(self.directory / "sendmail.cf"), "-bt"]
        return subprocess.run(
            argv, input=commands, capture_output=True, text=True, check=False, timeout=60
        ).stdout

    def address_test(self, *addresses: str) -> list[str]:
        """The mailer each address resolves to in Sendmail's address test (rulesets 3 and 0)."""
        out = self.test_mode("".join(f"3,0 {address}\n" for address in addresses))
        return re.findall(r"^parse +returns: \$# (\w+)", out, re.MULTILINE)

    def run_queue(self) -> subprocess.CompletedProcess[str]:
        """One queue run in the foreground (`sendmail -q`), every queued message retried now."""
        return subprocess.run(self._argv("-q"), capture_output=True, text=True, check=False, timeout=60)

    def queued(self) -> list[str]:
        """The queue ids of the messages in the queue (their qf files)."""
        return sorted(p.name[2:] for p in (self.directory / "queue").glob("qf*"))

    def start(self) -> Sendmail:
        self.configure()
        argv = self._argv("-bD")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=(self.directory / "stderr.log").open("wb")
        )
        try:
            wait_port(self.port, timeout=15)
        except RuntimeError:
            self.stop()
            raise RuntimeError(
                f"sendmail did not start: {(self.directory / 'stderr.log').read_text()}"
            ) from None
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def traffic(self) -> str:
        path = self.directory / "traffic.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_traffic(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.traffic():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in sendmail's traffic log")
            time.sleep(0.05)
