"""Bounces through a real LMTP listener while a Redis master is killed: what an MTA's queue sees.

Each bounce is delivered like an MTA delivers it: 451 -> it stays queued and is sent again a moment later
(the same message, the same Message-ID), until it gets 250. Shared by tests/store/test_failover.py and
benchmarks/failover.py, which print what `Traffic` counts.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bouncekeeper import verpkeys
from bouncekeeper.core import verp
from tests.support.dsn import postfix_dsn
from tests.support.lmtp import BOUNCE_DOMAIN, SECRET

RING = verp.Keyring.from_secrets([SECRET.encode()])


def bounce_for(rcpt: str, n: int) -> tuple[str, bytes]:
    """The VERP address a bounce for `rcpt` comes back to, and the bounce (its own Message-ID)."""
    address = verp.encode(rcpt, keyring=RING, bounce_domain=BOUNCE_DOMAIN, day=verpkeys.today())
    return address, postfix_dsn(rcpt, to=address, n=n)


def lmtp_deliver(where: tuple[str, int], rcpt: str, data: bytes) -> int:
    """One LMTP transaction for one recipient: the DATA reply's code (or the refusing reply's)."""
    with smtplib.LMTP(*where, timeout=30) as client:
        client.ehlo("mta.example.test")
        client.mail("<>")
        code, _ = client.rcpt(rcpt)
        if code != 250:
            return int(code)
        code, _ = client.data(data)
        return int(code)


@dataclass
class Traffic:
    """What the queue saw: each 451 and each 250, timed against the moment the master was killed."""

    sent: int = 0  # bounces (each counted once, however often it was tried)
    accepted: int = 0  # bounces that got their 250
    tempfails: int = 0  # 451 replies (a bounce can get several)
    tempfailed: int = 0  # bounces that got at least one 451
    other: list[int] = field(default_factory=list)  # any other reply: must stay empty
    killed_at: float | None = None
    last_tempfail: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def recovery(self) -> float | None:
        """Seconds from the kill to the last 451 (after it every bounce was accepted); None: no 451."""
        if self.killed_at is None or self.last_tempfail is None:
            return None
        return max(0.0, self.last_tempfail - self.killed_at)


def run(
    where: tuple[str, int],
    rcpts: list[str],
    kill: Callable[[], None],
    *,
    kill_after: int,
    senders: int = 4,
    retry_every: float = 0.1,
    give_up_after: float = 60.0,
) -> Traffic:
    """Deliver a bounce for each of `rcpts` (`senders` at a time), calling `kill` once `kill_after` are in."""
    traffic = Traffic(sent=len(rcpts))
    started = threading.Event()
    done = threading.Semaphore(0)
    next_index = iter(range(len(rcpts)))
    index_lock = threading.Lock()

    def one(n: int) -> None:
        address, data = bounce_for(rcpts[n], n)
        deadline = time.monotonic() + give_up_after
        failed = False
        while time.monotonic() < deadline:
            code = lmtp_deliver(where, address, data)
            with traffic.lock:
                if code == 250:
                    traffic.accepted += 1
                    traffic.tempfailed += failed
                    return
                if code != 451:
                    traffic.other.append(code)
                    return
                traffic.tempfails += 1
                failed = True
                traffic.last_tempfail = time.monotonic()
            time.sleep(retry_every)
        with traffic.lock:
            traffic.tempfailed += failed

    def worker() -> None:
        started.wait()
        while True:
            with index_lock:
                n = next(next_index, None)
            if n is None:
                return
            one(n)
            done.release()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(senders)]
    for t in threads:
        t.start()
    started.set()
    for _ in range(kill_after):
        done.acquire()
    traffic.killed_at = time.monotonic()
    kill()
    for t in threads:
        t.join(give_up_after + 30)
    return traffic


def report(name: str, traffic: Traffic, recorded: int) -> str:
    recovery = "n/a" if traffic.recovery is None else f"{traffic.recovery:.2f} s"
    return (
        f"{name}: bounces sent {traffic.sent}, recorded {recorded}, tempfailed {traffic.tempfailed} "
        f"({traffic.tempfails} replies 451), recovery {recovery}"
    )
