"""Bounces per second through `bouncekeeper lmtp` into Redis, against `bouncekeeper ingest` in the same run.

    python benchmarks/lmtp_throughput.py [--messages N] [--concurrency 1,10,50] [--rounds 3]

Starts a private redis-server and the real listener (`bouncekeeper lmtp`, a separate process, on a unix
socket as Exim uses it, and on TCP), then delivers N corpus bounces (../shared/corpus, every message
labelled a bounce, each given a unique Message-ID and its own signed VERP recipient so that none is a
duplicate) over C persistent LMTP sessions in parallel. Each message is classified and recorded before
its 250. The baseline is the same N messages through `bouncekeeper ingest` (one process, no protocol),
timed from process start to exit; and, as the ceiling, Service.process_bounce called in a loop in this
process. The paths take turns, for --rounds rounds; it prints the median messages/s of each, the range,
and the ratio to ingest.
"""

from __future__ import annotations

import argparse
import json
import mailbox
import os
import pathlib
import re
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "milter"), str(ROOT)]

from tests.support.redis_server import RedisServer  # noqa: E402

from bouncekeeper import config, verpkeys  # noqa: E402 - after the path set-up above
from bouncekeeper.core import verp  # noqa: E402
from bouncekeeper.service.bounces import Arrival, Service  # noqa: E402
from bouncekeeper.store.event import Source  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"  # ../shared beside the checkout
SECRET = "b3nchmark-key-0123456789abcdef0123"
DOMAIN = "bounce.example.net"


def corpus_bounces() -> list[bytes]:
    found = []
    for line in (CORPUS / "labels.jsonl").read_text().splitlines():
        label = json.loads(line)
        if label.get("is_bounce"):
            raw = (CORPUS / label["file"]).read_bytes()
            found.append(re.sub(rb"\r?\n|\r", b"\r\n", raw))  # on the wire: CRLF (RFC 5321 2.3.8)
    return found


def workload(n: int, run: str) -> list[tuple[str, bytes]]:
    """(VERP recipient, message) pairs, each message unique (its own Message-ID: the store's dedup id)."""
    bounces = corpus_bounces()
    ring = verp.Keyring.from_secrets([SECRET.encode()])
    today = verpkeys.today()
    out = []
    for i in range(n):
        # 20 recipients per domain: a realistic spread that keeps the per-domain circuit breaker shut.
        rcpt = verp.encode(f"user{i}@d{i // 20}.example.org", keyring=ring, bounce_domain=DOMAIN, day=today)
        raw = f"Message-ID: <{run}-{i}@bench.invalid>\r\n".encode() + bounces[i % len(bounces)]
        out.append((rcpt, raw))
    return out


def write_config(directory: pathlib.Path, redis_url: str, listen: str) -> pathlib.Path:
    key = directory / "verp.key"
    key.write_text(SECRET + "\n")
    conf = directory / f"bk-{abs(hash(listen))}.toml"
    conf.write_text(
        f'state_dir = "{directory}"\n[log]\nlevel = "WARNING"\n'
        f'[verp]\nbounce_domain = "{DOMAIN}"\nsecret_files = ["{key}"]\n'
        f'[redis]\nurl = "{redis_url}"\n[lmtp]\nlisten = "{listen}"\nsocket_mode = 0o666\n'
    )
    return conf


def bouncekeeper(conf: pathlib.Path, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
    argv = [sys.executable, "-m", "bouncekeeper.cli", "--config", str(conf), *args]
    return subprocess.Popen(argv, env=env, **kwargs)  # type: ignore[call-overload]


def wait_listening(listen: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("bouncekeeper lmtp exited")
        try:
            connect(listen).quit()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(listen)


def connect(listen: str) -> smtplib.LMTP:
    if listen.startswith("unix:"):
        return smtplib.LMTP(listen.removeprefix("unix:"), timeout=60)
    host, _, port = listen.rpartition(":")
    return smtplib.LMTP(host, int(port), timeout=60)


def deliver_all(listen: str, work: list[tuple[str, bytes]], concurrency: int) -> tuple[float, int]:
    """Seconds to deliver everything over `concurrency` sessions; and how many got a 250."""
    chunks = [work[i::concurrency] for i in range(concurrency)]
    ok = [0] * concurrency
    barrier = threading.Barrier(concurrency + 1)

    def session(index: int) -> None:
        client = connect(listen)
        client.ehlo("bench.example.net")
        barrier.wait()
        for rcpt, raw in chunks[index]:
            client.mail("<>")
            client.rcpt(rcpt)
            code, _ = client.data(raw)
            ok[index] += code == 250
        client.quit()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start, sum(ok)


def run_ingest(directory: pathlib.Path, conf: pathlib.Path, n: int, run: str) -> float:
    """The baseline: `bouncekeeper ingest` over a maildir of the same messages, process start to exit."""
    box = mailbox.Maildir(directory / f"maildir-{run}", create=True)
    for _, raw in workload(n, run):
        box.add(raw)
    start = time.perf_counter()
    proc = bouncekeeper(conf, "ingest", str(directory / f"maildir-{run}"), stdout=subprocess.DEVNULL)
    if proc.wait() != 0:
        raise RuntimeError("bouncekeeper ingest failed")
    return n / (time.perf_counter() - start)


def run_direct(conf: pathlib.Path, n: int, run: str) -> float:
    """The ceiling: Service.process_bounce called in a loop, no protocol, no process start."""
    service = Service.open(config.load(conf))
    work = workload(n, run)
    start = time.perf_counter()
    for rcpt, raw in work:
        service.process_bounce(Arrival(raw, envelope_rcpt=rcpt, envelope_sender="", source=Source.LMTP))
    rate = n / (time.perf_counter() - start)
    service.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running every path once")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    n = args.messages
    load_before = os.getloadavg()[0]
    rates: dict[str, list[float]] = {}
    ingest = "bouncekeeper ingest (maildir, one process)"

    with tempfile.TemporaryDirectory(prefix="bk-bench-") as tmp:
        directory = pathlib.Path(tmp)
        redis = RedisServer(directory / "redis")
        redis.start()
        unix, tcp = f"unix:{directory}/lmtp.sock", "127.0.0.1:18024"
        listeners = [
            bouncekeeper(write_config(directory, redis.url, listen), "lmtp") for listen in (unix, tcp)
        ]
        try:
            for listen, proc in zip((unix, tcp), listeners, strict=True):
                wait_listening(listen, proc)
            conf = write_config(directory, redis.url, "unix:/dev/null")
            # Rounds interleave the paths, so that other work on the machine hits them alike.
            for r in range(args.rounds):
                rates.setdefault(ingest, []).append(run_ingest(directory, conf, n, f"ingest-{r}"))
                name = "Service.process_bounce in-process (no protocol)"
                rates.setdefault(name, []).append(run_direct(conf, n, f"direct-{r}"))
                for listen, cs in ((unix, levels), (tcp, [10])):
                    for c in cs:
                        seconds, ok = deliver_all(listen, workload(n, f"lmtp-{r}-{listen}-{c}"), c)
                        if ok != n:
                            raise RuntimeError(f"only {ok}/{n} messages got 250")
                        kind = "unix socket" if listen == unix else "TCP"
                        rates.setdefault(f"lmtp, {kind}, concurrency {c}", []).append(n / seconds)
            stored = redis.client().xlen("bk:events")
        finally:
            for proc in listeners:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            redis.stop()

    base = statistics.median(rates[ingest])
    print(f"{n} corpus bounces per run, each recorded in Redis before its answer; {os.cpu_count()} CPUs")
    # Other work on the machine skews every row alike; the ratios are what compare.
    print(f"load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f}; {args.rounds} rounds")
    print(f"{'path':<50} {'median msgs/s':>14} {'(min-max)':>12} {'vs ingest':>10}")
    for name, values in rates.items():
        median = statistics.median(values)
        spread = f"{min(values):.0f}-{max(values):.0f}"
        print(f"{name:<50} {median:>14.0f} {spread:>12} {median / base:>9.2f}x")
    print(f"(events in the Redis stream at the end: {stored})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
