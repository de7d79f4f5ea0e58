"""An authenticated API request while unauthenticated clients attack `bouncekeeper http`, against no attack.

    .venv/bin/python benchmarks/hostile_http.py [--seconds 5] [--clients 300] [--big 20]

Starts the real `bouncekeeper http` (a separate process, as the operator runs it, default `[http]`
limits) on a private redis-server. Then, for the baseline (no attack) and for each attack, it sends one
authenticated `GET /suppressions` after another for --seconds, each on a new connection, timed from
connect to the whole answer, while the attack's clients run in a process of their own:

- big-body: --big clients POST /bounces without a token, announcing a 10 MiB body (max_body) and
  streaming it as fast as loopback takes it, reconnecting whenever the server closes (docs/hostile.md: 20 of
  them took the server from 40 MB to 245 MB when it read bodies before authenticating);
- slow-header: --clients clients send a request line, then one header byte a second (docs/hostile.md: 300
  held 301 threads indefinitely);
- idle: --clients clients connect and send nothing (the same for idle keep-alive).

It prints, per attack, the worst and median latency of the legitimate requests, the worst against the
baseline's worst, how many got their 200, the server's memory growth (peak RSS during the attack minus
RSS before it), its peak thread count, and how many connections a bound cut per second (from its
/metrics). The measurement and the table are benchmarks/hostile.py's; its `--only http` runs
`http_section` beside the mail listeners.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from benchmarks.hostile import Attacker, Context, Row, Target, measure, report  # noqa: E402
from tests.support.dovecot import free_port  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

TOKEN = "hostile-http-benchmark-token-0123456789"
MAX_BODY = 10 * 1024 * 1024  # [http] max_body's default


# --- the attackers ---------------------------------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _repeat(
    port: int, session: Callable[[socket.socket, threading.Event], None], stop: threading.Event
) -> None:
    """One client: a session, and another when the server ends it, until stopped."""
    while not stop.is_set():
        try:
            sock = _connect(port)
        except OSError:
            stop.wait(0.1)
            continue
        with contextlib.suppress(OSError), sock:
            session(sock, stop)


def big_body(port: int) -> Attacker:
    head = (
        f"POST /bounces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: message/rfc822\r\n"
        f"Content-Length: {MAX_BODY}\r\n\r\n"
    ).encode()
    chunk = b"x" * 65536

    def session(sock: socket.socket, stop: threading.Event) -> None:
        sock.sendall(head)
        sent = 0
        while sent < MAX_BODY and not stop.is_set():
            sock.sendall(chunk)
            sent += len(chunk)

    return lambda stop: _repeat(port, session, stop)


def slow_header(port: int) -> Attacker:
    def session(sock: socket.socket, stop: threading.Event) -> None:
        sock.sendall(b"GET /suppressions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while not stop.wait(1.0):
            sock.sendall(b"x")

    return lambda stop: _repeat(port, session, stop)


def idle(port: int) -> Attacker:
    def session(sock: socket.socket, stop: threading.Event) -> None:
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                if not sock.recv(1024):
                    return  # closed by the server: connect again
            except TimeoutError:
                continue

    return lambda stop: _repeat(port, session, stop)


# --- the measurement -----------------------------------------------------------------------------------


def probe(port: int) -> bool:
    """One authenticated API request on a new connection; True when it got its 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/suppressions", headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        response.read()
        return response.status == 200
    finally:
        conn.close()


def cut_so_far(port: int) -> float:
    """bouncekeeper_limited_total{listener="http"} summed over its limits, from the server's /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    lines = (line.split() for line in text.splitlines() if line.startswith("bouncekeeper_limited_total{"))
    return sum(float(value) for name, value in lines if 'listener="http"' in name)


def attack_row(target: Target, port: int, attack: str, attackers: list[Attacker]) -> Row:
    """benchmarks/hostile.py's measurement, with the cuts per second the server counted meanwhile."""
    before, started = cut_so_far(port), time.monotonic()
    row = measure(target, attack, attackers)
    row.cuts = (cut_so_far(port) - before) / (time.monotonic() - started)
    return row


def _start_server(
    directory: pathlib.Path, redis_url: str, source: pathlib.Path
) -> tuple[subprocess.Popen[bytes], int]:
    token = directory / "http-token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    conf = directory / "http.toml"
    conf.write_text(
        f'[redis]\nurl = "{redis_url}"\n[http]\ntoken_file = "{token}"\nlisten = "127.0.0.1:{port}"\n'
        '[log]\nlevel = "ERROR"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bouncekeeper.cli", "--config", str(conf), "http"],
        env={**os.environ, "PYTHONPATH": str(source), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError):
            if probe(port):
                return proc, port
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("bouncekeeper http did not start")
        time.sleep(0.1)


def http_section(
    ctx: Context, clients: int = 300, big: int = 20, source: pathlib.Path = ROOT / "milter"
) -> list[Row]:
    """The baseline, then each attack, against one `bouncekeeper http` (its package under `source`)."""
    proc, port = _start_server(ctx.directory, ctx.redis_url, source)
    target = Target("http", lambda _n: probe(port), proc.pid, ctx.seconds)
    try:
        rows = [attack_row(target, port, "none (baseline)", [])]
        for name, make, count in (
            (f"big-body x{big} (unauthenticated, 10 MiB each)", big_body, big),
            (f"slow-header x{clients} (a byte a second)", slow_header, clients),
            (f"idle x{clients}", idle, clients),
        ):
            rows.append(attack_row(target, port, name, [make(port) for _ in range(count)]))
        return rows
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per attack, and for the baseline")
    parser.add_argument("--clients", type=int, default=300, help="slow-header and idle clients")
    parser.add_argument("--big", type=int, default=20, help="big-body clients")
    parser.add_argument(
        "--source",
        type=pathlib.Path,
        default=ROOT / "milter",
        help="the directory holding the bouncekeeper package to run (another build, to compare)",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bk-hostile-http-") as tmp:
        directory = pathlib.Path(tmp)
        redis = RedisServer(directory / "redis")
        redis.start()
        try:
            rows = http_section(
                Context(directory, redis.url, args.seconds), args.clients, args.big, args.source
            )
        finally:
            redis.stop()
    load = f"load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f}"
    print(f"bouncekeeper http from {args.source}, default [http] limits; {args.seconds:.0f} s per attack; "
          f"{os.cpu_count()} CPUs; {load}")  # fmt: skip
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
