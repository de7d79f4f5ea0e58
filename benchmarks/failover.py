"""Bounces through the real LMTP listener while Redis fails over: Sentinel and Cluster.

    python benchmarks/failover.py [--bounces N] [--senders S]

For each set-up (tests/support/: a Sentinel master with two replicas and three sentinels, 500 ms
down-after; a Cluster of three masters with two replicas each, 1 s node timeout), N bounces for N addresses
are delivered over S LMTP sessions at a time, as an MTA's queue does (a 451 is retried 100 ms later,
the same message). Once a third are in, the master is SIGKILLed (on the Cluster, the one holding the
global event stream, which every bounce writes). Prints: bounces sent, recorded (exactly one event per
address afterwards), tempfailed (bounces that got a 451, and the 451 replies), and the recovery time
(from the kill to the last 451). The baseline, in the same run: the same traffic on a fresh set-up with
no kill, its wall time beside the failover run's; and, for each, the cost of wait_replicas = 1 and a
failover without it (whatever the dead master acknowledged but had not replicated is not "recorded").
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "milter"), str(ROOT)]

from tests.support import failover  # noqa: E402 - after the path set-up above
from tests.support.lmtp import ListenerThread, settings_for  # noqa: E402
from tests.support.redis_cluster import RedisClusterServers  # noqa: E402
from tests.support.redis_sentinel import RedisSentinels  # noqa: E402

from bouncekeeper.service.bounces import Service  # noqa: E402

WAIT = "wait_replicas = 1\nwait_timeout = 0.3"


def _run(
    url: str,
    directory: pathlib.Path,
    kill: Callable[[Service], Callable[[], None]],
    args: argparse.Namespace,
    redis: str = "",
) -> tuple[failover.Traffic, int, float]:
    settings = settings_for(directory, url, redis=redis)
    service = Service.open(settings)
    listener = ListenerThread(service, settings).start()
    # Spread over domains: a hundred failing addresses of one domain would open its circuit breaker.
    rcpts = [f"bench{n}@d{n % 64}.example.org" for n in range(args.bounces)]
    where = listener.lmtp_address
    assert isinstance(where, tuple)
    try:
        started = time.monotonic()
        traffic = failover.run(
            where, rcpts, kill(service), kill_after=args.bounces // 3, senders=args.senders
        )
        elapsed = time.monotonic() - started
        views = service.store.views(rcpts, events=10)
        recorded = sum(1 for view in views if len(view.events) == 1)
    finally:
        listener.stop()
        service.close()
    return traffic, recorded, elapsed


def sentinel(args: argparse.Namespace, *, kill: bool, redis: str) -> tuple[failover.Traffic, int, float]:
    with tempfile.TemporaryDirectory(prefix="bk-bench-sentinel-") as tmp:
        servers = RedisSentinels(pathlib.Path(tmp), replicas=2)
        try:
            servers.start()
            victim = servers.master()
            return _run(
                servers.url,
                pathlib.Path(tmp),
                lambda _service: (lambda: servers.kill(victim)) if kill else (lambda: None),
                args,
                redis,
            )
        finally:
            servers.stop()


def cluster(args: argparse.Namespace, *, kill: bool, redis: str) -> tuple[failover.Traffic, int, float]:
    with tempfile.TemporaryDirectory(prefix="bk-bench-cluster-") as tmp:
        servers = RedisClusterServers(pathlib.Path(tmp), replicas=2, extra=("--cluster-node-timeout", "1000"))
        try:
            servers.start()

            def killer(service: Service) -> Callable[[], None]:
                port = int(service.store.client.get_node_from_key(service.store.keys.stream).port)
                return (lambda: servers.kill_port(port)) if kill else (lambda: None)

            return _run(servers.url, pathlib.Path(tmp), killer, args, redis)
        finally:
            servers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bounces", type=int, default=300)
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # a 451 logged per refused delivery: the counts below say it all
    cases = [
        ("sentinel, WAIT 1, master killed", lambda: sentinel(args, kill=True, redis=WAIT)),
        ("sentinel, WAIT 1, no kill (baseline)", lambda: sentinel(args, kill=False, redis=WAIT)),
        ("sentinel, no WAIT, no kill", lambda: sentinel(args, kill=False, redis="")),
        ("sentinel, no WAIT, master killed", lambda: sentinel(args, kill=True, redis="")),
        ("cluster, WAIT 1, master killed", lambda: cluster(args, kill=True, redis=WAIT)),
        ("cluster, WAIT 1, no kill (baseline)", lambda: cluster(args, kill=False, redis=WAIT)),
        ("cluster, no WAIT, no kill", lambda: cluster(args, kill=False, redis="")),
        ("cluster, no WAIT, master killed", lambda: cluster(args, kill=True, redis="")),
    ]
    times: dict[str, float] = {}
    for name, case in cases:
        traffic, recorded, elapsed = case()
        times[name] = elapsed
        print(
            failover.report(name, traffic, recorded)
            + f"; wall {elapsed:.2f} s ({args.bounces / elapsed:.0f}/s)"
        )
        if traffic.other:
            print(f"  unexpected replies: {sorted(set(traffic.other))}")
    s_kill, s_base, s_nowait = (times[name] for name, _ in cases[:3])
    c_kill, c_base, c_nowait = (times[name] for name, _ in cases[4:7])
    print(
        f"sentinel: failover run / baseline {s_kill / s_base:.2f}x; WAIT 1 / no WAIT {s_base / s_nowait:.2f}x"
    )
    print(
        f"cluster: failover run / baseline {c_kill / c_base:.2f}x; WAIT 1 / no WAIT {c_base / c_nowait:.2f}x"
    )


if __name__ == "__main__":
    main()
