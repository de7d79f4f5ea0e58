"""A legitimate bounce (or policy request) while hostile clients attack each listener, against no attack.

    .venv/bin/python benchmarks/hostile.py [--seconds 5] [--only lmtp,milter,policy,http]

For each listener it starts the real daemon (a separate process, as the operator runs it) on a private
redis-server, then, for each attack, runs the attack's hostile sessions (threads of a process of their
own, from 127.0.0.2) and meanwhile sends one legitimate request after another (a bounce to a fresh signed
VERP address, or a policy request about one) and times each from connect to answer. Every attack runs for
--seconds, and so does the baseline (the same legitimate requests without an attack), in the same run. It
prints, per listener and attack, the worst and median latency of the legitimate requests, the ratio of
the worst to the baseline's worst, how many were answered as they should be, and the memory the attack
cost the daemon (peak RSS during the attack minus RSS before it) and the bytes its log grew meanwhile
(at --log-level, INFO by default as operators run it; the baseline row is the legitimate requests' own
lines). The goal (docs/hostile.md): a legitimate bounce answered within 1 s while 8 hostile sessions run,
and a log that an attack cannot grow faster than the limit on lines about cuts ([log] limited_burst).
--source runs another build's package (a checkout's milter/ directory), to compare before and after.

- lmtp: `bouncekeeper lmtp`, the legitimate bounces on its unix socket (the MTA: trusted), the attackers
  on its SMTP listener (`smtp_listen`, TCP, `trusted_clients = []`: the internet), enforce mode;
- milter: `bouncekeeper milter` behind a private Postfix (tests/support/postfix.py; needs root and
  Postfix), everything through Postfix's smtpd;
- policy: the policy service of `bouncekeeper milter` (`policy_socket`, TCP), as Postfix's smtpd speaks
  to it, one persistent connection for the legitimate requests;
- http: `bouncekeeper http`, an authenticated API request against unauthenticated big-body, slow-header
  and idle clients (benchmarks/hostile_http.py, which also runs on its own and counts threads).

Other sections can be added to SECTIONS (name, function): a function gets the run's Context and returns
its rows.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import os
import pathlib
import re
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from tests.support.milter_harness import forge  # noqa: E402
from tests.support.postfix import Postfix, free_port, have_postfix  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

from bouncekeeper import verpkeys  # noqa: E402 - after the path set-up above
from bouncekeeper.core import verp  # noqa: E402

SECRET = "h0stile-benchmark-key-0123456789ab"
DOMAIN = "bounce.example.net"
RING = verp.Keyring.from_secrets([SECRET.encode()])
FIXTURE = ROOT / "tests" / "fixtures" / "lmtp" / "lhost-postfix-30.eml"  # a real Postfix DSN
BOUNCE = re.sub(rb"\r?\n", b"\r\n", FIXTURE.read_bytes())
# The CPU attack: a 16 KB line of "x@y." (find_recipients rescanned the line per address: 3.5 s
# to classify before the linear-time classifier; hostile_mail's builder of that name puts words before
# the addresses, which took a different path).
HEAVY = (
    b"From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
    b"Content-Type: text/plain\r\n\r\n" + b"x@y." * 4096 + b"\r\n"
)


@dataclasses.dataclass
class Context:
    directory: pathlib.Path
    redis_url: str
    seconds: float
    source: pathlib.Path = ROOT / "milter"  # the directory holding the bouncekeeper package to run
    log_level: str = "INFO"


@dataclasses.dataclass
class Row:
    listener: str
    attack: str
    latencies: list[float]
    answered: int
    rss_kb: int
    attackers: str = ""
    threads: int = 0  # the daemon's peak thread count during the attack
    cuts: float | None = None  # connections a bound cut per second, where the section can read it
    log_kb: float | None = None  # what the daemon's log grew during the attack, where the section has it


class EventLike(Protocol):
    def wait(self, timeout: float | None = None) -> bool: ...


Section = Callable[[Context], list[Row]]
Probe = Callable[[int], bool]  # one legitimate request (numbered); True when answered as it should be
Attacker = Callable[[threading.Event], None]  # one hostile session (or client), until the event is set

_counter = iter(range(10**9))


def vaddr(rcpt: str) -> str:
    return verp.encode(rcpt, keyring=RING, bounce_domain=DOMAIN, day=verpkeys.today())


def forged(n: int) -> str:
    return forge(vaddr(f"guess{n}@example.org"))


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A number of /proc/PID/status: VmRSS (kB) by default, or another field (Threads)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@dataclasses.dataclass
class Target:
    """A running daemon, and the legitimate request to time against it."""

    listener: str
    probe: Probe
    pid: int
    seconds: float
    log: pathlib.Path | None = None  # the daemon's log file (its stderr)


def run_all(target: Target, attacks: Iterable[tuple[str, list[Attacker]]]) -> list[Row]:
    """The baseline (no attack), then each attack, in this run."""
    rows = [measure(target, "none (baseline)", [])]
    rows += [measure(target, name, attackers) for name, attackers in attacks]
    return rows


def measure(target: Target, attack: str, attackers: list[Attacker]) -> Row:
    """Run the attackers, and the probe in a loop for `seconds`; the daemon's RSS sampled meanwhile."""
    pid, seconds, probe = target.pid, target.seconds, target.probe
    stop = threading.Event()
    before = rss_kb(pid)
    peak = [before, rss_kb(pid, "Threads")]
    logged = target.log.stat().st_size if target.log else 0

    def sample() -> None:
        while not stop.wait(0.05):
            with contextlib.suppress(OSError):
                peak[0] = max(peak[0], rss_kb(pid))
                peak[1] = max(peak[1], rss_kb(pid, "Threads"))

    # The attackers run in a process of their own: their Python work must not slow the probe's client.
    forked = multiprocessing.get_context("fork")
    halt = forked.Event()
    attacking = forked.Process(target=_attack, args=(attackers, halt), daemon=True)
    attacking.start()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    time.sleep(min(1.0, seconds / 4) if attackers else 0)  # the attack under way first
    latencies: list[float] = []
    answered = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        ok = False
        with contextlib.suppress(OSError, smtplib.SMTPException):
            ok = probe(next(_counter))
        latencies.append(time.perf_counter() - start)
        answered += ok
        time.sleep(0.05)
    stop.set()
    halt.set()
    attacking.join(20)
    if attacking.is_alive():
        attacking.kill()
    sampler.join(5)
    row = Row(target.listener, attack, latencies, answered, peak[0] - before, f"{len(attackers)}", peak[1])
    if target.log:
        row.log_kb = (target.log.stat().st_size - logged) / 1024
    return row


def _attack(attackers: list[Attacker], halt: EventLike) -> None:
    """The attack process: each attacker in a thread, until `halt` is set."""
    stop = threading.Event()
    threads = [threading.Thread(target=_quiet, args=(a, stop), daemon=True) for a in attackers]
    for t in threads:
        t.start()
    halt.wait()
    stop.set()
    for t in threads:
        t.join(5)
    os._exit(0)  # sockets still open close with the process


def _quiet(attacker: Attacker, stop: threading.Event) -> None:
    """An attacker that is cut off (421, reset) starts again until the attack ends."""
    while not stop.is_set():
        try:
            attacker(stop)
        except (OSError, smtplib.SMTPException, ValueError):
            time.sleep(0.01)


def deliver_bounce(client: smtplib.SMTP, n: int) -> bool:
    """The legitimate request: a real DSN to its own signed VERP address; True when it got its 250."""
    with client:
        client.ehlo("mx.example.org")
        client.mail("<>")
        client.rcpt(vaddr(f"legit{n}@example.org"))
        code, _ = client.data(f"Message-ID: <legit-{n}@bench.invalid>\r\n".encode() + BOUNCE)
        return code == 250


# -- SMTP/LMTP attackers, for the LMTP listener and Postfix alike --------------------------------------


# The attackers' own address: the legitimate client is 127.0.0.1 (or the unix socket), and the limits
# on forged addresses apply per client.
HOSTILE = ("127.0.0.2", 0)


def _connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=30, source_address=HOSTILE)


def _smtp(address: tuple[str, int]) -> smtplib.SMTP:
    client = smtplib.SMTP(*address, timeout=30, source_address=HOSTILE)
    client.ehlo("hostile.example")
    return client


def heavy_messages(address: tuple[str, int]) -> Attacker:
    """The issue's 8 sessions: 2 RCPTs and one 16 KB message each, over and over. The RCPTs are two
    leaked VERP addresses (what an attacker gets from mail of ours), which every listener classifies."""
    leaked = [vaddr("leaked1@example.org"), vaddr("leaked2@example.org")]

    def run(stop: threading.Event) -> None:
        with _smtp(address) as client:
            while not stop.is_set():
                client.mail("<>")
                for rcpt in leaked:
                    client.rcpt(rcpt)
                client.data(HEAVY)

    return run


def many_rcpts(address: tuple[str, int]) -> Attacker:
    """2,000 identical RCPTs and a bounce, over and over."""

    def run(stop: threading.Event) -> None:
        rcpt = vaddr("victim@example.org")
        with _smtp(address) as client:
            while not stop.is_set():
                client.mail("<>")
                for _ in range(2000):
                    client.rcpt(rcpt)
                client.data(BOUNCE)

    return run


def pipelined_guesses(address: tuple[str, int]) -> Attacker:
    """3,000 forged VERP addresses pipelined on one connection, reconnecting when cut off."""

    guesses = b"".join(f"RCPT TO:<{forged(n)}>\r\n".encode() for n in range(3000))

    def run(stop: threading.Event) -> None:
        with _connect(address) as sock:
            sock.recv(1024)
            sock.sendall(b"EHLO hostile.example\r\nMAIL FROM:<>\r\n")
            sock.sendall(guesses)
            while not stop.is_set() and sock.recv(65536):
                pass

    return run


def long_lines(address: tuple[str, int]) -> Attacker:
    """9 MB command lines, one after another."""
    line = b"NOOP " + b"x" * (9 * 1024 * 1024) + b"\r\n"

    def run(stop: threading.Event) -> None:
        with _connect(address) as sock:
            sock.recv(1024)
            while not stop.is_set():
                sock.sendall(line)
                sock.recv(1024)

    return run


def idle(address: tuple[str, int] | str, count: int) -> list[Attacker]:
    """`count` connections that send nothing (held until the attack ends or the server closes them)."""

    def run(stop: threading.Event) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        with socket.socket(family) as sock:
            if family == socket.AF_INET:
                sock.bind(HOSTILE)
            sock.settimeout(1)
            sock.connect(address)
            while not stop.is_set():
                try:
                    if not sock.recv(1024):
                        stop.wait()  # closed by the server: this connection costs nothing more
                        return
                except TimeoutError:
                    continue

    return [run] * count


def attacks(address: tuple[str, int], idle_count: int = 1000) -> Iterator[tuple[str, list[Attacker]]]:
    yield "8 sessions: 2 RCPTs + 16 KB x@y. message", [heavy_messages(address)] * 8
    yield "8 sessions: 2,000 identical RCPTs", [many_rcpts(address)] * 8
    yield "8 sessions: 3,000 pipelined forged RCPTs", [pipelined_guesses(address)] * 8
    yield "8 sessions: 9 MB command lines", [long_lines(address)] * 8
    yield f"{idle_count:,} idle connections", idle(address, idle_count)


# -- the LMTP listener ----------------------------------------------------------------------------------


def _config(directory: pathlib.Path, ctx: Context, tail: str) -> pathlib.Path:
    """A config in enforce mode on the run's Redis, with `tail` (a section) at the end."""
    key = directory / "verp.key"
    key.write_text(SECRET + "\n")
    conf = directory / "bk.toml"
    conf.write_text(
        f'state_dir = "{directory}/state"\n[log]\nlevel = "{ctx.log_level}"\n[policy]\nmode = "enforce"\n'
        f'[verp]\nbounce_domain = "{DOMAIN}"\nsecret_files = ["{key}"]\n'
        f'[redis]\nurl = "{ctx.redis_url}"\n{tail}'
    )
    return conf


def _daemon(ctx: Context, conf: pathlib.Path, command: str, log: pathlib.Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ctx.source)}
    argv = [sys.executable, "-m", "bouncekeeper.cli", "--config", str(conf), command]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def _wait(check: Callable[[], object], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited")
        try:
            check()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def lmtp_section(ctx: Context) -> list[Row]:
    d = ctx.directory / "lmtp"
    d.mkdir()
    sock, port = d / "lmtp.sock", free_port()
    conf = _config(
        d, ctx, f'[lmtp]\nlisten = "unix:{sock}"\nsmtp_listen = "127.0.0.1:{port}"\ntrusted_clients = []\n'
    )
    proc = _daemon(ctx, conf, "lmtp", d / "lmtp.log")

    def probe(n: int) -> bool:
        return deliver_bounce(smtplib.LMTP(str(sock), timeout=30), n)

    try:
        _wait(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close(), proc, "lmtp")
        return run_all(
            Target("lmtp", probe, proc.pid, ctx.seconds, d / "lmtp.log"), attacks(("127.0.0.1", port))
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


# -- the policy service ---------------------------------------------------------------------------------


def _policy_request(rcpt: str, client: str = "192.0.2.25") -> bytes:
    return (
        f"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=\nrecipient={rcpt}\n"
        f"client_address={client}\n\n"
    ).encode()


def policy_section(ctx: Context) -> list[Row]:
    d = ctx.directory / "policy"
    d.mkdir()
    port = free_port()
    conf = _config(
        d, ctx, f'[milter]\nsocket = "unix:{d}/milter.sock"\npolicy_socket = "inet:{port}@127.0.0.1"\n'
    )
    proc = _daemon(ctx, conf, "milter", d / "milter.log")
    address = ("127.0.0.1", port)
    _wait(lambda: socket.create_connection(address, timeout=1).close(), proc, "policy service")
    legit = socket.create_connection(address, timeout=30)
    reader = legit.makefile("rb")

    def probe(n: int) -> bool:
        legit.sendall(_policy_request(vaddr(f"legit{n}@example.org")))
        return (reader.readline() + reader.readline()).startswith(b"action=FILTER ")

    payload = b"".join(_policy_request(forged(n), "198.51.100.7") for n in range(3000))

    def guesses(stop: threading.Event) -> None:
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(payload)
            while not stop.is_set() and sock.recv(65536):
                pass

    def big_requests(stop: threading.Event) -> None:
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(b"recipient=" + b"x" * 70_000 + b"\n")
            sock.recv(1024)

    try:
        target = Target("policy", probe, proc.pid, ctx.seconds, d / "milter.log")
        return run_all(
            target,
            [
                ("300 idle connections", idle(address, 300)),
                ("8 clients: 3,000 pipelined forged", [guesses] * 8),
                ("8 clients: 70 KB requests", [big_requests] * 8),
            ],
        )
    finally:
        reader.close()
        legit.close()
        proc.kill()  # pymilter takes seconds to leave its accept loop; nothing to keep here
        proc.wait(30)


# -- the milter, behind a real Postfix ------------------------------------------------------------------


def milter_section(ctx: Context) -> list[Row]:
    if not have_postfix() or os.geteuid() != 0:
        print("milter: skipped (needs root and Postfix)", file=sys.stderr)
        return []
    d = ctx.directory / "milter"
    d.mkdir()
    d.chmod(0o755)
    sock = d / "milter.sock"
    conf = _config(
        d, ctx, f'[milter]\nsocket = "unix:{sock}"\nsocket_mode = "0666"\noriginating_networks = []\n'
    )
    proc = _daemon(ctx, conf, "milter", d / "milter.log")
    _wait(sock.stat, proc, "milter")
    postfix = Postfix(
        d / "postfix",
        relay_port=free_port(),  # nothing listens: whatever is relayed waits in the queue
        milter_socket=f"unix:{sock}",
        settings={
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            # Postfix's own flow control: a flood of messages (here discarded by the milter, so no
            # delivery hands back their tokens) makes smtpd pause up to in_flow_delay (1 s by default)
            # before each new message, the legitimate one too. That is Postfix's bound, measured
            # without it here so that the rows show the milter's.
            "in_flow_delay": "0s",
        },
    ).start()
    address = ("127.0.0.1", postfix.port)

    def probe(n: int) -> bool:
        return deliver_bounce(smtplib.SMTP(*address, timeout=30), n)

    try:
        # Idle connections: Postfix's own smtpd process limit (100) bounds them before the milter.
        return run_all(
            Target("milter", probe, proc.pid, ctx.seconds, d / "milter.log"), attacks(address, idle_count=90)
        )
    finally:
        postfix.stop()
        proc.kill()
        proc.wait(30)


def http_section(ctx: Context) -> list[Row]:
    from benchmarks import hostile_http  # noqa: PLC0415 - it imports this module (as benchmarks.hostile)

    return [Row(**dataclasses.asdict(row)) for row in hostile_http.http_section(ctx, source=ctx.source)]


SECTIONS: list[tuple[str, Section]] = [
    ("lmtp", lmtp_section),
    ("milter", milter_section),
    ("policy", policy_section),
    ("http", http_section),
]


def report(rows: list[Row]) -> None:
    print(f"{'listener':<8} {'attack':<46} {'n':>4} {'ok':>4} {'worst s':>8} {'median s':>9} "
          f"{'worst/base':>10} {'RSS +MB':>8} {'threads':>8} {'cuts/s':>7} {'log KB':>8}")  # fmt: skip
    base: dict[str, float] = {}
    for row in rows:
        worst = max(row.latencies) if row.latencies else float("nan")
        if row.attack.startswith("none"):
            base[row.listener] = worst
        ratio = worst / base[row.listener] if base.get(row.listener) else float("nan")
        median = statistics.median(row.latencies) if row.latencies else float("nan")
        print(
            f"{row.listener:<8} {row.attack:<46} {len(row.latencies):>4} {row.answered:>4} {worst:>8.3f} "
            f"{median:>9.3f} {ratio:>9.1f}x {row.rss_kb / 1024:>8.1f} {row.threads:>8} "
            f"{'-' if row.cuts is None else f'{row.cuts:.0f}':>7} "
            f"{'-' if row.log_kb is None else f'{row.log_kb:.1f}':>8}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per attack, and for the baseline")
    parser.add_argument("--only", default="", help="comma-separated section names")
    parser.add_argument("--log-level", default="INFO", help="the daemons' [log] level")
    parser.add_argument(
        "--source", type=pathlib.Path, default=ROOT / "milter", help="the bouncekeeper package's directory"
    )
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bk-hostile-") as tmp:
        directory = pathlib.Path(tmp)
        directory.chmod(0o755)
        redis = RedisServer(directory / "redis")
        redis.start()
        try:
            for name, section in SECTIONS:
                if not wanted or name in wanted:
                    rows += section(Context(directory, redis.url, args.seconds, args.source, args.log_level))
        finally:
            redis.stop()
    print(f"{args.seconds:.0f} s per attack; {os.cpu_count()} CPUs; load average before/after: "
          f"{load_before:.1f} / {os.getloadavg()[0]:.1f}")  # fmt: skip
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
