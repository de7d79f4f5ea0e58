"""A private Postfix instance and smtp-sink MXes under a temp dir, for MTA tests and benchmarks.

The instance is configured FROM the shipped files: `postfix/main.cf.snippet` is applied line by line with
`postconf -e` and the `-o` overrides of `postfix/master.cf.snippet` with `postconf -P`, exactly as the
docs tell an operator to; only the sandboxing (queue dir, ports, relayhost, chroot off) comes from
here. `postfix` needs root, and prints its errors only to a terminal.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pwd
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
MAIN_SNIPPET = ROOT / "postfix" / "main.cf.snippet"
MASTER_SNIPPET = ROOT / "postfix" / "master.cf.snippet"
SHIPPED_SOCKET = "unix:/bouncekeeper/milter.sock"
# The routed set-up (postfix/routed/): applied after the two snippets above, with these shipped examples
# replaced by the sandbox's values.
ROUTED_MAIN = ROOT / "postfix" / "routed" / "main.cf.snippet"
ROUTED_MASTER = ROOT / "postfix" / "routed" / "master.cf.snippet"
SHIPPED_POLICY_SOCKET = "unix:/bouncekeeper/policy.sock"
SHIPPED_AFTER_QUEUE = "127.0.0.1:10027"
SHIPPED_WATCHED = ("bounces.example.org", "app-in@example.org")

# The services of Debian's master.cf that a relay needs, unchrooted (the instance lives in a temp dir).
_MASTER_BASE = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")
        time.sleep(0.05)


def _run_tty(command: str) -> None:
    """postfix prints its errors only to a terminal: give it one (script) so failures are readable."""
    done = subprocess.run(
        ["script", "-qec", command, "/dev/null"], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command}: exit {done.returncode}: {done.stdout}{done.stderr}")


def snippet_settings(path: pathlib.Path = MAIN_SNIPPET) -> list[str]:
    """The `name = value` lines of a main.cf snippet, as an operator feeds them to `postconf -e`."""
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def snippet_overrides(path: pathlib.Path = MASTER_SNIPPET) -> list[tuple[str, str, str, str]]:
    """(service, type, name, value) for each `-o name=value` of a master.cf snippet."""
    found: list[tuple[str, str, str, str]] = []
    service: tuple[str, str] | None = None
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            fields = line.split()
            service = (fields[0], fields[1])
            continue
        match = re.match(r"\s+-o\s+([a-z_0-9]+)=(.*)$", line)
        if match and service is not None:
            found.append((service[0], service[1], match.group(1), match.group(2).strip()))
    return found


def snippet_services(path: pathlib.Path, rename: Mapping[str, str]) -> str:
    """The service blocks of a master.cf snippet as master.cf text: services renamed by `rename` (a port
    for `submission`, say), chroot off (the sandbox is no chroot), every `-o` line kept."""
    out: list[str] = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            out.append(line)
            continue
        fields = line.split()
        fields[0] = rename.get(fields[0], fields[0])
        fields[4] = "n"
        out.append(" ".join(fields))
    return "\n".join(out) + "\n"


@dataclass
class Routed:
    """The routed set-up's sandbox values: what replaces the shipped examples."""

    policy_socket: str  # Postfix syntax, unix:/path
    watched: tuple[str, ...]  # the check_recipient_access keys: bounce domain, protected addresses


@dataclass
class SinkMessage:
    """One transaction as smtp-sink dumped it."""

    path: pathlib.Path
    sender: str
    recipients: list[str]
    text: str

    @property
    def body(self) -> str:
        return self.text.split("\n\n", 1)[1] if "\n\n" in self.text else ""

    def header(self, name: str) -> list[str]:
        head = self.text.split("\n\n", 1)[0]
        return [
            line.split(":", 1)[1].strip()
            for line in head.splitlines()
            if line.lower().startswith(name.lower() + ":")
        ]


def finished_dumps(directory: pathlib.Path, proc: subprocess.Popen[bytes] | None) -> list[pathlib.Path]:
    """smtp-sink's dump files that it has closed, in name order.

    smtp-sink opens a message's file at MAIL and writes the recipients and the body as they come: a file
    it still holds open is a message in progress (read now, it may have no recipients yet).
    """
    held: set[str] = set()
    if proc is not None and proc.poll() is None:
        fd_dir = pathlib.Path(f"/proc/{proc.pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else ():
            try:
                held.add(os.readlink(fd))
            except OSError:
                continue  # closed between the listing and the readlink: it is finished
    return [path for path in sorted(directory.iterdir()) if str(path) not in held]


class SmtpSink:
    """smtp-sink as a remote MX; `reject` = "RCPT" makes it refuse every recipient with `reply` (5xx)."""

    def __init__(
        self,
        directory: pathlib.Path,
        *,
        reject: str = "",
        reply: str = "550 5.1.1 Recipient address rejected: User unknown in virtual mailbox table",
        dump: bool = True,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.reject = reject
        # smtp-sink's own default, "500 5.3.0 Error: command failed", says nothing about the address.
        self.reply = reply
        self.dump = dump
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpSink:
        self.directory.mkdir(parents=True, exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.directory, postfix_user.pw_uid, postfix_user.pw_gid)
        argv = ["smtp-sink", "-u", "postfix"]
        if self.dump:
            argv += ["-d", f"{self.directory}/%H%M%S."]
        if self.reject:
            argv += ["-f", self.reject, "-B", self.reply]
        argv += [f"127.0.0.1:{self.port}", "256"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def messages(self) -> list[SinkMessage]:
        found = []
        for path in finished_dumps(self.directory, self.proc):
            text = path.read_text(errors="replace")
            head = text.split("\n\n", 1)[0]
            sender = ""
            rcpts: list[str] = []
            for line in head.splitlines():
                if line.startswith("X-Mail-Args:"):
                    sender = line.split(":", 1)[1].split()[0].strip("<>")
                elif line.startswith("X-Rcpt-Args:"):
                    rcpts.append(line.split(":", 1)[1].split()[0].strip("<>"))
            found.append(SinkMessage(path, sender, rcpts, text))
        return found

    def wait_for(self, predicate: object, timeout: float = 20.0) -> SinkMessage:
        """The first dumped message for which predicate(msg) is true; waits for it."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages():
                if predicate(msg):
                    return msg
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching message at the sink within {timeout}s")
            time.sleep(0.05)


class Postfix:
    """A private Postfix under `directory`: `etc/`, `spool/`, `data/`, `maillog`."""

    def __init__(
        self,
        directory: pathlib.Path,
        *,
        relay_port: int,
        milter_socket: str | None,
        listeners: Mapping[str, Mapping[str, str]] | None = None,
        settings: Mapping[str, str] | None = None,
        routed: Routed | None = None,
        services: str = "",
    ) -> None:
        """`listeners`: name -> {-o overrides} for extra smtpd services, each on its own free port.
        `routed`: add postfix/routed/'s services (ports "submission" and "after-queue") and settings.
        `services`: more master.cf text, as it stands (a `virtual` delivery agent, say)."""
        self.directory = directory
        self.etc = directory / "etc"
        self.relay_port = relay_port
        self.milter_socket = milter_socket
        self.routed = routed
        routed_ports = ("submission", "after-queue") if routed else ()
        self.ports = {name: free_port() for name in ("smtp", *(listeners or {}), *routed_ports)}
        self.listeners = {"smtp": {}, **(listeners or {})}
        self.settings = dict(settings or {})
        self.services = services
        self.running = False

    @property
    def port(self) -> int:
        return self.ports["smtp"]

    @property
    def maillog(self) -> pathlib.Path:
        return self.directory / "maillog"

    def postconf(self, *args: str) -> str:
        done = subprocess.run(
            ["postconf", "-c", str(self.etc), *args], capture_output=True, text=True, check=True, timeout=30
        )
        return done.stdout

    def configure(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
        self.etc.mkdir(exist_ok=True)
        (d / "spool").mkdir(exist_ok=True)
        data = d / "data"
        data.mkdir(exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(data, postfix_user.pw_uid, postfix_user.pw_gid)
        (self.etc / "main.cf").write_text("compatibility_level = 3.6\n")
        master = _MASTER_BASE
        for name, overrides in self.listeners.items():
            master += f"127.0.0.1:{self.ports[name]} inet n - n - - smtpd\n"
            for key, value in overrides.items():
                master += f"  -o {key}={value}\n"
        if self.routed is not None:
            rename = {
                "submission": f"127.0.0.1:{self.ports['submission']}",
                SHIPPED_AFTER_QUEUE: f"127.0.0.1:{self.ports['after-queue']}",
            }
            master += snippet_services(ROUTED_MASTER, rename).replace(
                SHIPPED_SOCKET, self.milter_socket or ""
            )
        (self.etc / "master.cf").write_text(master + self.services)
        base = {
            "queue_directory": str(d / "spool"),
            "data_directory": str(data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_protocols": "ipv4",
            "inet_interfaces": "127.0.0.1",
            "myhostname": "mta.example.test",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "smtp_dns_support_level": "disabled",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "maillog_file": str(d / "maillog"),
            "maillog_file_prefixes": str(d),
            # Tests force retries with `postqueue -f`; keep Postfix's own backoff out of their way.
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "queue_run_delay": "1s",
            "smtp_connect_timeout": "5s",
            "biff": "no",
        }
        self.postconf("-e", *(f"{k}={v}" for k, v in base.items()))
        if self.milter_socket is not None:
            # The operator's step: the shipped snippets, only the socket path adapted to this sandbox.
            lines = [line.replace(SHIPPED_SOCKET, self.milter_socket) for line in snippet_settings()]
            self.postconf("-e", *lines)
            for service, kind, key, value in snippet_overrides():
                if service == "cleanup":
                    self.postconf("-P", f"{service}/{kind}/{key}={value}")
        if self.routed is not None:
            lines = snippet_settings(ROUTED_MAIN)
            lines = [line.replace(SHIPPED_POLICY_SOCKET, self.routed.policy_socket) for line in lines]
            table = ", ".join(f"{key}=bouncekeeper" for key in self.routed.watched)
            shipped = ", ".join(f"{key}=bouncekeeper" for key in SHIPPED_WATCHED)
            assert any(shipped in line for line in lines), "the shipped table changed: update SHIPPED_WATCHED"
            self.postconf("-e", *(line.replace(shipped, table) for line in lines))
        if self.settings:
            self.postconf("-e", *(f"{k}={v}" for k, v in self.settings.items()))

    def start(self) -> Postfix:
        self.configure()
        _run_tty(f"postfix -c {self.etc} check")
        _run_tty(f"postfix -c {self.etc} start")
        self.running = True
        for port in self.ports.values():
            wait_port(port)
        return self

    def stop(self) -> None:
        if self.running:
            with contextlib.suppress(RuntimeError):
                _run_tty(f"postfix -c {self.etc} stop")
            self.running = False

    def flush(self) -> None:
        """Retry deferred mail now (what Postfix does by itself after its backoff)."""
        subprocess.run(["postqueue", "-c", str(self.etc), "-f"], check=True, timeout=30)

    def queue(self) -> list[str]:
        """Queue ids of mail still in the queue."""
        done = subprocess.run(
            ["postqueue", "-c", str(self.etc), "-j"], capture_output=True, text=True, check=True, timeout=30
        )
        return re.findall(r'"queue_id": "([0-9A-F]+)"', done.stdout)

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.log(), start)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {pattern!r} in the maillog within {timeout}s:\n{self.log()[start:]}"
                )
            time.sleep(0.05)


def have_postfix() -> bool:
    return all(shutil.which(b) for b in ("postfix", "smtp-sink", "postconf")) and os.geteuid() == 0
