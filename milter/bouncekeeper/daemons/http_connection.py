"""One client connection of httpserver.py: its deadlines, its phase, its header budget, and its socket as
streams that keep to them.

A deadline is counted from a fixed moment, not per read (a trickle cannot extend it); every read and write
on the socket ends at it, as a `Cut` naming the limit (the metric's label). The phase tells the server
which connections it may evict to make room (httpserver.BoundedServer.start_thread). A connection closed
with a body unread lingers first (`linger`), so that the client reads our answer instead of a reset.
"""

from __future__ import annotations

import contextlib
import enum
import io
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LINGER = 2.0  # seconds to drain an unread body after an early answer, before the close
LINGER_BYTES = 1024 * 1024  # and at most this much of it: a client streaming a body costs little CPU


@dataclass(frozen=True)
class Limits:
    max_connections: int = 64
    idle_timeout: float = 10.0
    header_timeout: float = 10.0
    request_timeout: float = 60.0


class Phase(enum.StrEnum):
    WAITING = "waiting"  # for a request, its headers or an unauthenticated form: may be evicted
    ACTIVE = "active"  # an accepted request being read, processed or answered
    LINGER = "linger"  # draining an unread body before the close: may be evicted


class Cut(Exception):
    """A deadline passed or a limit was hit; `reason` is the metric's label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection:
    """One client connection's deadline, phase and header budget (its handler thread changes them)."""

    def __init__(self, sock: socket.socket, peer: str, limits: Limits) -> None:
        self.sock = sock
        self.peer = peer
        self.limits = limits
        self.phase = Phase.WAITING
        self.since = time.monotonic()
        self.started = self.since  # the first byte of the current request
        self.deadline = self.since + limits.idle_timeout
        self.reason = "idle"
        self.budget: int | None = None  # bytes the header phase may still read
        self.unread = False  # closed with a body unread: linger before the close
        self.evicted = False
        self.threaded = False  # has a thread (else it waits in the room)
        self.address: Any = (peer, 0)

    def expect(self, seconds: float, reason: str, *, start: float | None = None) -> None:
        """The next reads or writes must be done `seconds` after `start` (now); `reason` if not."""
        self.deadline = (time.monotonic() if start is None else start) + seconds
        self.reason = reason

    def enter(self, phase: Phase) -> None:
        if phase is not self.phase:
            self.phase = phase
            self.since = time.monotonic()

    def timeout(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Cut(self.reason)
        return left

    def by_deadline(self, reason: str, call: Callable[[Any], Any], argument: Any) -> Any:
        """`call(argument)`, a socket operation, within what is left until the deadline; a Cut for
        `reason` when that runs out."""
        self.sock.settimeout(self.timeout())
        try:
            return call(argument)
        except TimeoutError:
            raise Cut(reason) from None

    def evict(self) -> None:
        # From the accepting thread: shutdown() wakes the handler's blocked recv with an end of file.
        self.evicted = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class Reader(io.RawIOBase):
    """The socket as a raw stream whose every read ends at the connection's deadline and budget."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        conn = self.conn
        view = memoryview(buffer).cast("B")
        if conn.budget is not None:
            if conn.budget <= 0:
                raise Cut("header-size")
            view = view[: conn.budget]
        n: int = conn.by_deadline(conn.reason, conn.sock.recv_into, view)
        if conn.budget is not None:
            conn.budget -= n
        return n


class Writer(io.BufferedIOBase):
    """Unbuffered writes (as the stdlib's), each ending at the connection's deadline."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.conn.by_deadline("write-time", self.conn.sock.sendall, data)
        with memoryview(data) as view:
            return view.nbytes


def linger(conn: Connection) -> None:
    """Send our FIN, then read and drop what the client still sends, for at most LINGER seconds and
    LINGER_BYTES (curl sends `Expect: 100-continue` for bodies over 1 MiB: it waits for our answer).

    Closing a socket with unread data makes the kernel answer with a reset, which can destroy our
    response in the client's receive buffer before it is read (RFC 9112, section 9.6).
    """
    conn.enter(Phase.LINGER)
    conn.expect(LINGER, "linger")
    with contextlib.suppress(OSError, Cut):
        conn.sock.shutdown(socket.SHUT_WR)
        scratch = bytearray(64 * 1024)
        drained = 0
        while drained < LINGER_BYTES:
            n = conn.by_deadline("linger", conn.sock.recv_into, scratch)
            if not n:
                break
            drained += n
