"""Store throughput: bounce events/s into one local Redis from several connections, round trips per
bounce, and memory per idle tracked address.

Starts its own redis-server on a unix socket under a temp dir (the embedded default's transport), then:

1. baseline: each worker process sends one INCR per event (one round trip, no script): the ceiling that
   this machine, Python and redis-py allow;
2. store: each worker records bounces through Store.record (dedup + breaker, then record.lua + stream +
   stats: two round trips), spread over many addresses and domains, a mix of hard/soft/unscored;
3. round trips: counted by a connection class that counts the writes it sends (a pipeline is one);
4. memory: N addresses get one hard bounce each; MEMORY USAGE of each key class, per address, and the
   used_memory difference. "Idle tracked" = the keys that remain after the dedup window: the `track`
   key (the hard score and the capped history, one short line per event: store/keys.py TRACK), with the
   default configuration (history_size 20) and with history_size = 0; and, for comparison, an address
   with one soft failure (its soft counter and track key).

5. capacity (docs/capacity.md): redis-server's own CPU time per event during the store run (so events per
   second one Redis core can take, however fast the clients are), and the stream's bytes per entry.

Goals: >= 5,000 events/s, <= 300 bytes per idle tracked address.
Usage: python benchmarks/store_throughput.py [--workers 4] [--events 20000] [--addresses 20000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "milter"))

import redis  # noqa: E402 -- after the source root is on the path

from bouncekeeper.config import RedisSettings  # noqa: E402
from bouncekeeper.core.scoring import Effect, Mode, Rules  # noqa: E402
from bouncekeeper.store import Store  # noqa: E402
from bouncekeeper.store import keys as k  # noqa: E402
from bouncekeeper.store.event import Event, EventKind, Source  # noqa: E402
from bouncekeeper.store.redis_store import Item  # noqa: E402

RULES = Rules(mode=Mode.ENFORCE)
DIAGNOSTIC = (
    "smtp; 550 5.1.1 <user@example.org>: Recipient address rejected: User unknown in virtual mailbox table"
)


class CountingConnection(redis.UnixDomainSocketConnection):
    """Counts the writes to Redis: one per command, one per pipeline, i.e. one per round trip."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        super().send_packed_command(command, check_health)


def start_redis(directory: pathlib.Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = directory / "redis.sock"
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--dir", str(directory), "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(unix_socket_path=str(sock))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    return proc, str(sock)


def item(n: int, rng: random.Random, address: str | None = None) -> Item:
    address = address or f"user{rng.randrange(1_000_000)}@domain{rng.randrange(500)}.example"
    effect = rng.choice([Effect.HARD, Effect.HARD, Effect.SOFT, Effect.NONE])
    kind = {Effect.HARD: EventKind.PERMANENT, Effect.SOFT: EventKind.TEMPORARY}.get(
        effect, EventKind.TEMPORARY
    )
    event = Event(
        at=time.time(), kind=kind, source=Source.MILTER, address=address, id=f"{n:016x}",
        message_id=f"<{n}.{rng.random()}@app.example.net>", status="5.1.1", reason="userunknown",
        diagnostic=DIAGNOSTIC, remote_mta="mx.example.org", client="192.0.2.1", queue_id="4QbX2l0zYxz9",
        effect=effect.value,
    )  # fmt: skip
    return Item(address, effect, event)


def worker_store(sock: str, worker: int, events: int, out: Any) -> None:
    store = Store.from_settings(RedisSettings(url=f"unix://{sock}"))
    rng = random.Random(worker)
    items = [item(worker * 10_000_000 + n, rng) for n in range(events)]
    out.put(("ready", 0.0))
    start = time.perf_counter()
    for it in items:
        store.record([it], now=time.time(), rules=RULES)
    out.put(("done", time.perf_counter() - start))


def worker_incr(sock: str, worker: int, events: int, out: Any) -> None:
    client = redis.Redis(unix_socket_path=sock)
    out.put(("ready", 0.0))
    start = time.perf_counter()
    for n in range(events):
        client.incr(f"baseline:{worker}:{n % 1000}")
    out.put(("done", time.perf_counter() - start))


def server_cpu_seconds(pid: int) -> float:
    """redis-server's user + system CPU time (/proc/PID/stat fields 14 and 15)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stream_bytes_per_entry(sock: str) -> float:
    client = redis.Redis(unix_socket_path=sock)
    stream = Store(client, RedisSettings()).keys.stream
    entries = int(client.xlen(stream))
    return (client.memory_usage(stream, samples=0) or 0) / max(entries, 1)


def run_workers(target: Any, sock: str, workers: int, events: int) -> float:
    """Events/s over the wall time of all workers."""
    queue: Any = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=target, args=(sock, w, events, queue)) for w in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        assert queue.get()[0] == "ready"
    start = time.perf_counter()
    for _ in procs:
        queue.get()
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    return workers * events / wall


def round_trips(sock: str, bounces: int) -> float:
    pool = redis.ConnectionPool(connection_class=CountingConnection, path=sock, decode_responses=True)
    store = Store(redis.Redis(connection_pool=pool), RedisSettings())
    rng = random.Random(7)
    store.record([item(0, rng)], now=time.time(), rules=RULES)  # scripts loaded, connection open
    CountingConnection.writes = 0
    for n in range(1, bounces + 1):
        store.record([item(n, rng)], now=time.time(), rules=RULES)
    return CountingConnection.writes / bounces


def memory(sock: str, addresses: int, history_size: int = 20) -> dict[str, float]:
    client = redis.Redis(unix_socket_path=sock, decode_responses=True)
    client.flushall()
    store = Store(client, RedisSettings(history_size=history_size))
    rng = random.Random(11)
    before = int(client.info("memory")["used_memory"])
    for n in range(addresses):
        address = f"user{n}@domain{n % 500}.example"
        event_item = item(n, rng, address)
        store.record([Item(address, Effect.HARD, event_item.event)], now=time.time(), rules=RULES)
    client.delete(store.keys.stream, store.keys.stats)
    for key in client.scan_iter(match=f"{store.keys.prefix}domain:*", count=1000):
        client.delete(key)
    after_all = int(client.info("memory")["used_memory"])
    sizes: dict[str, list[int]] = {"track": [], "seen": [], "line": []}
    for n in range(0, addresses, max(addresses // 1000, 1)):
        address = f"user{n}@domain{n % 500}.example"
        track = store.keys.address(address, k.TRACK)
        sizes["track"].append(client.memory_usage(track) or 0)
        sizes["line"].append(len(client.get(track) or ""))
        # item(n, ...) gave the event the id f"{n:016x}": its dedup key is known, no SCAN needed.
        sizes["seen"].append(client.memory_usage(store.keys.seen(address, f"{n:016x}")) or 0)
    # Drop the dedup keys, as their TTL (dedup_hours) would: what remains is the idle address.
    for key in client.scan_iter(match=f"{store.keys.prefix}*:seen:*", count=1000):
        client.delete(key)
    idle = int(client.info("memory")["used_memory"])
    avg = {name: sum(v) / len(v) for name, v in sizes.items()}
    return {
        "memory_usage_track": avg["track"],
        "track_value_chars": avg["line"],
        "memory_usage_seen": avg["seen"],
        "used_memory_per_address_fresh": (after_all - before) / addresses,
        "used_memory_per_address_idle": (idle - before) / addresses,
    }


def full_history_bytes(sock: str, history_size: int = 20) -> float:
    """MEMORY USAGE of one address's track key once its history is full (more events than it keeps)."""
    client = redis.Redis(unix_socket_path=sock, decode_responses=True)
    client.flushall()
    store = Store(client, RedisSettings(history_size=history_size))
    rng = random.Random(17)
    address = "user@domain.example"
    for n in range(history_size + 5):
        store.record([item(n, rng, address)], now=time.time(), rules=RULES)
    return float(client.memory_usage(store.keys.address(address, k.TRACK)) or 0)


def soft_memory(sock: str, addresses: int) -> float:
    """used_memory per address with one soft failure, default configuration, dedup keys dropped."""
    client = redis.Redis(unix_socket_path=sock, decode_responses=True)
    client.flushall()
    store = Store(client, RedisSettings())
    rng = random.Random(13)
    before = int(client.info("memory")["used_memory"])
    for n in range(addresses):
        address = f"user{n}@domain{n % 500}.example"
        event = item(n, rng, address).event
        store.record([Item(address, Effect.SOFT, event)], now=time.time(), rules=RULES)
    client.delete(store.keys.stream, store.keys.stats)
    for pattern in (f"{store.keys.prefix}domain:*", f"{store.keys.prefix}*:seen:*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    return (int(client.info("memory")["used_memory"]) - before) / addresses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--events", type=int, default=5000, help="per worker")
    parser.add_argument("--addresses", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bk-bench-") as directory:
        proc, sock = start_redis(pathlib.Path(directory))
        try:
            cpu0 = server_cpu_seconds(proc.pid)
            baseline = run_workers(worker_incr, sock, args.workers, args.events)
            cpu1 = server_cpu_seconds(proc.pid)
            redis.Redis(unix_socket_path=sock).flushall()
            cpu2 = server_cpu_seconds(proc.pid)
            rate = run_workers(worker_store, sock, args.workers, args.events)
            cpu3 = server_cpu_seconds(proc.pid)
            entry = stream_bytes_per_entry(sock)
            trips = round_trips(sock, 2000)
            mem = memory(sock, args.addresses)
            bare = memory(sock, args.addresses, history_size=0)
            soft = soft_memory(sock, args.addresses)
            full = full_history_bytes(sock)
        finally:
            proc.terminate()
            proc.wait()

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    idle = mem["used_memory_per_address_idle"]
    print(f"workers: {args.workers} processes, one connection each, unix socket; {args.events} events each")
    print(f"baseline (one INCR per event):         {baseline:8.0f} events/s")
    print(f"store (Store.record, the full path):   {rate:8.0f} events/s  ratio {rate / baseline:.2f}")
    print(f"  goal >= 5000 events/s: {verdict(rate >= 5000)}")
    total = args.workers * args.events
    incr_us, store_us = (cpu1 - cpu0) / total * 1e6, (cpu3 - cpu2) / total * 1e6
    per_core = 1e6 / max(store_us, 1e-9)
    print(f"redis-server CPU per event: store {store_us:6.1f} µs, INCR {incr_us:6.1f} µs  (ratio "
          f"{store_us / max(incr_us, 1e-9):.1f}); events/s per Redis core: {per_core:8.0f}")  # fmt: skip
    print(f"stream bytes per entry (MEMORY USAGE / XLEN): {entry:6.0f}")
    print(f"round trips per single-address bounce: {trips:8.2f}  (single server; a Redis Cluster takes 2)")
    print(f"memory, {args.addresses} addresses with one hard bounce each:")
    print(f"  MEMORY USAGE track key (score + 1-event history): {mem['memory_usage_track']:5.0f} bytes "
          f"({mem['track_value_chars']:.0f}-character value)")  # fmt: skip
    print(f"  MEMORY USAGE track key, history_size = 0:         {bare['memory_usage_track']:5.0f} bytes "
          f"({bare['track_value_chars']:.0f}-character value)")  # fmt: skip
    print(f"  MEMORY USAGE dedup key (TTL 120 h):  {mem['memory_usage_seen']:8.0f} bytes")
    print(f"  used_memory per address, fresh:      {mem['used_memory_per_address_fresh']:8.0f} bytes")
    print(f"  used_memory per idle tracked address, default config (history_size 20; the track key: "
          f"score + a 1-event history; dedup key expired): {idle:5.0f} bytes")  # fmt: skip
    lean = bare["used_memory_per_address_idle"]
    print(f"  used_memory per idle address, history_size = 0: {lean:5.0f} bytes  (the score alone)")
    print(f"  MEMORY USAGE track key with a full history (20 events): {full:5.0f} bytes")
    print(f"  used_memory per address with one soft failure (soft counter + track key): {soft:5.0f} bytes")
    print(f"  goal <= 300 bytes per idle tracked address: default config {verdict(idle <= 300)}, "
          f"history_size = 0 {verdict(lean <= 300)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
