"""Guessing VERP tags: how many forged bounce addresses a client may try (the RCPT oracle, docs/hostile.md).

In enforce mode a forged bounce address is refused at RCPT and a valid one accepted: each RCPT is one
guess at the tag. Two bounds make guessing hopeless whatever the tag length:

- per session: after `PER_SESSION` forged addresses the adapter answers 421 4.7.0 and closes it (one
  connection made 3,000 pipelined guesses in 0.58 s before);
- per client, across sessions: after `PER_CLIENT` forged addresses in `WINDOW` seconds, every bounce
  address from that client is answered the same 421 4.7.0, valid or not, until the window has passed:
  the answer then says nothing about the guess.

An expired signature is authentic (a late bounce, not a guess) and is not counted. The table of clients
is bounded (`MAX_CLIENTS`, the least recently seen forgotten first); an IPv6 client is its /64, which one
host usually holds whole. Pure: the caller passes the time; thread-safe (the milter's and the policy
service's connections each have a thread).

The same window bounds the log: a stranger causes a cut as often as he likes, and a line for each would
let him fill the disk. `LineLimit` passes the first `LINE_BURST` lines of a kind per `LINE_INTERVAL`
seconds and then says how many it held back (log.py writes them; the metrics count every cut).
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

PER_SESSION = 3
PER_CLIENT = 10
WINDOW = 3600.0
MAX_CLIENTS = 10_000
# Bounces of one client processed at the same time by the milter (ClientShare).
PER_CLIENT_MESSAGES = 2
# Lines about cuts: per kind and interval, as syslog-ng's and rsyslog's rate limits do ([log] limited_*).
LINE_BURST = 10
LINE_INTERVAL = 60.0
# Kinds are fixed words of the code (a few dozen), never what a client sent: this bound is a guard.
MAX_LINE_KINDS = 256


def client_key(client: str) -> str:
    """The unit a limit applies to: the IPv4 address, the IPv6 /64; anything else as given."""
    try:
        ip = ipaddress.ip_address(client.removeprefix("IPv6:").split("%")[0])
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(slots=True)
class _Window:
    start: float
    count: int


class _Windows:
    """A fixed window per key, counting events, at most `size` keys: the least recently counted key is
    forgotten first, so a stranger who invents keys costs a bounded table. Callers hold their own lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._table: collections.OrderedDict[object, _Window] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def current(self, key: object, now: float, length: float) -> _Window | None:
        """The window of `key` if it is still open at `now`."""
        seen = self._table.get(key)
        return seen if seen is not None and now - seen.start < length else None

    def count(self, key: object, now: float, length: float) -> tuple[_Window | None, _Window]:
        """Count one event of `key` at `now`: the window that had ended (None when none had), and the
        open one after counting."""
        seen = self._table.pop(key, None)
        ended = None
        if seen is None or now - seen.start >= length:
            ended, seen = seen, _Window(now, 0)
        seen.count += 1
        self._table[key] = seen  # most recently counted last
        while len(self._table) > self.size:
            self._table.popitem(last=False)
        return ended, seen


class ForgeryLimit:
    """Forged bounce addresses per client over a fixed window, for one process."""

    def __init__(
        self, *, per_client: int = PER_CLIENT, window: float = WINDOW, max_clients: int = MAX_CLIENTS
    ) -> None:
        self.per_client = per_client
        self.window = window
        self._clients = _Windows(max_clients)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._clients)

    def blocked(self, client: str, now: float) -> bool:
        """Whether every bounce address from `client` is to be deferred now."""
        return self.blocked_for(client, now) > 0

    def blocked_for(self, client: str, now: float) -> float:
        """Seconds until `client` is no longer blocked; 0 when it is not (for a Retry-After)."""
        with self._lock:
            seen = self._clients.current(client_key(client), now, self.window)
            if seen is None or seen.count < self.per_client:
                return 0.0
            return self.window - (now - seen.start)

    def forged(self, client: str, now: float) -> bool:
        """Count one forged address from `client`; True when it is blocked from now on."""
        with self._lock:
            _, seen = self._clients.count(client_key(client), now, self.window)
            return seen.count >= self.per_client


class Lines(NamedTuple):
    """What to write for one line of a kind: `suppressed` lines were held back in the window that
    ended `span` seconds after it began (0: nothing to report), then the line itself if `write`."""

    write: bool
    suppressed: int = 0
    span: float = 0.0


class LineLimit:
    """Lines per kind over a fixed window: the first `burst` pass, the rest are counted and reported
    with the first line of a later window. At most `max_kinds` kinds, the least recently seen
    forgotten first (with its count, which the metrics still hold)."""

    def __init__(
        self, *, burst: int = LINE_BURST, interval: float = LINE_INTERVAL, max_kinds: int = MAX_LINE_KINDS
    ) -> None:
        self.burst = burst
        self.interval = interval
        self._kinds = _Windows(max_kinds)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kinds)

    def admit(self, kind: tuple[str, str], now: float) -> Lines:
        """Count one line of `kind` at `now`: whether to write it, and what was held back before it."""
        with self._lock:
            ended, seen = self._kinds.count(kind, now, self.interval)
        if seen.count > self.burst:
            return Lines(write=False)
        if ended is not None and ended.count > self.burst:
            return Lines(True, ended.count - self.burst, now - ended.start)
        return Lines(write=True)


class ClientShare:
    """At most `per_client` messages of one client processed at a time; its others wait their turn.

    The milter runs a thread per connection, and Python threads share one CPU's worth of work: eight
    sessions of one client classifying at once would slow everyone else's bounce eightfold. With a share
    they slow their own. A client has an entry only while it has messages in progress, so the table is
    bounded by the connections the MTA makes to the milter.
    """

    def __init__(self, per_client: int = PER_CLIENT_MESSAGES) -> None:
        self.per_client = per_client
        self._clients: dict[str, tuple[threading.BoundedSemaphore, list[int]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._clients)

    @contextlib.contextmanager
    def slot(self, client: str) -> Iterator[None]:
        key = client_key(client)
        with self._lock:
            entry = self._clients.setdefault(key, (threading.BoundedSemaphore(self.per_client), [0]))
            entry[1][0] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1][0] -= 1
                if not entry[1][0]:
                    del self._clients[key]
