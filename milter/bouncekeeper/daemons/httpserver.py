"""A bounded HTTP/1.1 server: for the API (httpd.py) and the daemons' `GET /metrics` (metrics.serve).

The stdlib's `ThreadingHTTPServer` starts a thread per connection without a cap and times out each read
on its own: 300 clients that send nothing, or one byte every 29 seconds, held 301 threads indefinitely
(docs/hostile.md). This keeps the stdlib's request parser and handler shape and bounds what a client can hold:

- A new connection gets no thread until its first byte: it waits in a room (one selector, one thread
  for all) for at most `idle_timeout`; ROOM_PER_THREAD * max_connections may wait, the longest-waiting
  closed beyond. A flood of idle connections costs sockets, not threads.
- `max_connections` threads, one per connection that has started a request. At the cap, a connection
  that starts one evicts the thread-holding connection that has waited longest for its request (still
  sending its headers, an unauthenticated form, lingering after an error, idle after its answer); when
  every one is busy with an accepted request, the new one gets 503 and is closed. So a flood of slow
  connections cannot lock a legitimate client out: it sends its request at once, and is served.
- Only a handler's `keep_alive()` request keeps its connection (and thread) for the next one: for the
  API, an authenticated one.
- Deadlines counted from a fixed moment, not per read (a trickle cannot extend them): `idle_timeout` for
  the first byte of a request (on a new or a kept-alive connection), `header_timeout` from that byte to
  the end of the headers, `request_timeout` from that byte to the end of the body, and `request_timeout`
  again to take the response.
- At most MAX_HEADER_BYTES of request line and headers (431 beyond), not the stdlib's 100 lines of 64 KB.
- No version in the `Server` header.
- A response sent while a body is unread closes the connection, after a lingering close of at most
  http_connection.LINGER seconds (so the client reads the answer instead of a reset); `Expect:
  100-continue` is answered only when the handler really reads the body, so a 401 never invites the body.

One connection's deadlines, phase, header budget and socket streams are in http_connection.py; the
waiting room, the threads and their eviction, the handler base and the daemons' /metrics are here.

What is cut is counted in `bouncekeeper_limited_total{listener,limit}` (listener "http" or "metrics",
the limits in metrics.HTTP_LIMITS) and logged (a few lines per limit and listener per interval, then
how many were held back, so a flood cannot flood the log: [log] limited_burst, limited_interval).
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bouncekeeper.daemons import metrics
from bouncekeeper.daemons.http_connection import Connection, Cut, Limits, Phase, Reader, Writer, linger
from bouncekeeper.log import get_logger

log = get_logger("bouncekeeper.httpserver")  # as before the folders: log filters use it

SERVER_NAME = "bouncekeeper"  # the Server header: never a version (docs/hostile.md)
MAX_HEADER_BYTES = 32 * 1024  # request line and headers; a browser sends 1-2 KB
ROOM_PER_THREAD = 4  # connections that may wait for their first byte, per thread (max_connections)
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nServer: bouncekeeper\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 32\r\nRetry-After: 5\r\nConnection: close\r\n\r\ntoo many connections; try again\n"
)


class _CutLog:
    """Counts every cut and logs it, a few lines per reason and interval (log.QueueIdAdapter.cut)."""

    def __init__(self, server: str) -> None:
        self.server = server

    def __call__(self, reason: str, peer: str) -> None:
        metrics.LIMITED.inc(self.server, reason)
        # An idle keep-alive connection closed is routine (an application's connection pool); the
        # rest is a client too slow, too big or too many.
        level = logging.DEBUG if reason == "idle" else logging.WARNING
        message = "%s: cut a connection from %s: %s"
        log.cut(f"{self.server} {reason}", message, self.server, peer, reason, level=level)


class _WaitingRoom:
    """Connections that have not sent their first byte yet, in one selector, without a thread each.

    So idle connections (a flood of them, or clients that connect early) cost a socket and a small
    object, not a thread: up to `capacity` of them; beyond, the one that has waited longest is closed.
    A connection that sends a byte leaves the room for a thread (BoundedServer.start_thread). One
    thread owns the selector; the accepting thread hands it new connections through a queue.
    """

    def __init__(self, server: BoundedServer, capacity: int) -> None:
        self.server = server
        self.capacity = capacity
        self.selector = selectors.DefaultSelector()
        self._arrivals: collections.deque[Connection] = collections.deque()
        self._waiting: dict[socket.socket, Connection] = {}  # in arrival order: the oldest first
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"bk-{server.name}-room", daemon=True)
        self._thread.start()

    def add(self, conn: Connection) -> None:
        self._arrivals.append(conn)
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"\0")

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._thread.join(5)
        for conn in [*self._waiting.values(), *self._arrivals]:
            with contextlib.suppress(OSError):
                conn.sock.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        while not self._closed:
            try:
                self._turn()
            except Exception:  # the room must not die (every new connection would hang): log, go on
                log.exception("%s: the waiting room failed; going on", self.server.name)
                time.sleep(0.1)

    def _turn(self) -> None:
        for key, _events in self.selector.select(timeout=0.25):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)
                continue
            conn = self._waiting.pop(key.fileobj, None)  # type: ignore[call-overload]
            self.selector.unregister(key.fileobj)
            if conn is not None:
                self.server.start_thread(conn)
        self._take_arrivals()
        self._expire()

    def _take_arrivals(self) -> None:
        while self._arrivals:
            conn = self._arrivals.popleft()
            if _ready(conn.sock):  # a client that sent its request at once (most): no need to wait
                self.server.start_thread(conn)
                continue
            while len(self._waiting) >= self.capacity:
                # The oldest makes room, unless its request came meanwhile (a select() may not have
                # seen it yet): then it leaves for a thread instead.
                oldest = next(iter(self._waiting.values()))
                if _ready(oldest.sock):
                    del self._waiting[oldest.sock]
                    self.selector.unregister(oldest.sock)
                    self.server.start_thread(oldest)
                else:
                    self._leave(oldest, "evicted")
            try:
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)
            except (OSError, ValueError):  # closed meanwhile
                self.server.forget(conn, "evicted")
                continue
            self._waiting[conn.sock] = conn

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in list(self._waiting.values()):
            if conn.deadline > now:
                break  # in arrival order, with the same idle timeout: the rest are younger
            self._leave(conn, "idle")

    def _leave(self, conn: Connection, limit: str) -> None:
        del self._waiting[conn.sock]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        self.server.forget(conn, limit)


def _ready(sock: socket.socket) -> bool:
    """Whether a read would not block: bytes have come (or the end of the stream, or an error)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True  # the thread finds the error and closes
    return True


class BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `limits.max_connections` of them; see the module's doc."""

    daemon_threads = True
    block_on_close = False  # server_close() must not wait for a client
    # The listen backlog: a flood of reconnecting clients waits there instead of having SYNs dropped
    # (a dropped SYN costs a legitimate client 1 s, then 3 s). The kernel caps it at somaxconn.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BoundedHandler],
        limits: Limits,
        name: str,
    ) -> None:
        self.address_family = socket_family(address[0])
        self.limits = limits
        self.name = name
        self.cut = _CutLog(name)
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, Connection] = {}
        # Before binding: a failed bind calls server_close(), which closes the room.
        self.room = _WaitingRoom(self, ROOM_PER_THREAD * limits.max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # No thread yet: the connection waits in the room until its first byte (or its idle deadline).
        conn = Connection(request, str(client_address[0]), self.limits)
        conn.address = client_address
        with self._lock:
            self._connections[request] = conn
            count = len(self._connections)
        metrics.HTTP_CONNECTIONS.set(count, self.name)
        self.room.add(conn)

    def start_thread(self, conn: Connection) -> None:
        """A connection has sent its first byte: a thread for it, within max_connections."""
        victim = None
        with self._lock:
            threaded = [c for c in self._connections.values() if c.threaded and not c.evicted]
            if len(threaded) >= self.limits.max_connections:
                waiting = [c for c in threaded if c.phase is not Phase.ACTIVE]
                if not waiting:
                    self._connections.pop(conn.sock, None)
                    self._refuse(conn.sock, conn.peer)
                    return
                victim = min(waiting, key=lambda c: c.since)
                victim.evict()
            conn.threaded = True
        if victim is not None:
            self.cut("evicted", victim.peer)
        # ThreadingMixIn's, with a name that tells whose connection a thread serves (and no list of
        # threads to join: block_on_close is off).
        name = f"bk-{self.name}:{self.server_address[1]}"
        args = (conn.sock, conn.address)
        try:
            threading.Thread(target=self.process_request_thread, args=args, name=name, daemon=True).start()
        except RuntimeError:  # the system refused a thread: this connection is refused, not leaked
            self.forget(conn, "connections")

    def forget(self, conn: Connection, limit: str) -> None:
        """Close a connection that never had a thread (from the room), counting why."""
        self.cut(limit, conn.peer)
        with contextlib.suppress(OSError):
            conn.sock.close()
        with self._lock:
            self._connections.pop(conn.sock, None)
            count = len(self._connections)
        metrics.HTTP_CONNECTIONS.set(count, self.name)

    def _refuse(self, request: socket.socket, peer: str) -> None:
        # In the accepting thread, so it must not block: a fresh socket's send buffer takes these bytes.
        self.cut("connections", peer)
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(BUSY)
            request.shutdown(socket.SHUT_WR)
        self.close_request(request)

    def connection(self, request: socket.socket) -> Connection:
        with self._lock:
            return self._connections[request]

    def phases(self) -> list[Phase]:
        """The phase of each open connection (for a health check, or a test's wait)."""
        with self._lock:
            return [c.phase for c in self._connections.values() if not c.evicted]

    def server_close(self) -> None:
        # Also end the connections still open, so that their threads do not wait out their deadlines.
        super().server_close()
        self.room.close()
        with self._lock:
            for conn in self._connections.values():
                conn.evict()

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            conn = self._connections.get(request)
        try:
            if conn is not None and conn.unread and not conn.evicted:
                linger(conn)
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_WR)
            self.close_request(request)
        finally:
            with self._lock:
                self._connections.pop(request, None)
                count = len(self._connections)
            metrics.HTTP_CONNECTIONS.set(count, self.name)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Called in an except block. The stdlib prints the traceback to stderr; a client that went away
        # (reset, broken pipe) is worth a DEBUG line, anything else the traceback in our log.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("%s: connection from %s: %s", self.name, client_address[0], exc)
        else:
            log.error("%s: connection from %s failed", self.name, client_address[0], exc_info=exc)


class BoundedHandler(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler on a `Connection`: deadlines, header budget, body-aware closing."""

    server: BoundedServer
    protocol_version = "HTTP/1.1"
    # Assumed until a request line names its version: the stdlib's "HTTP/0.9" answers a malformed
    # request line with a bare HTML page, no status line (a client cannot tell it is a 400).
    default_request_version = "HTTP/1.0"
    rbufsize = 8192

    def setup(self) -> None:
        self.connection = self.request
        self.conn = self.server.connection(self.request)
        self.reader = io.BufferedReader(Reader(self.conn), self.rbufsize)
        self.rfile = self.reader
        self.wfile = Writer(self.conn)
        self.body_read = False
        self.parsed = False
        self.expect_continue = False
        self._connection_header = False

    def version_string(self) -> str:
        return SERVER_NAME

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: %s %s", self.server.name, self.address_string(), format % args)

    def handle_one_request(self) -> None:
        conn, limits = self.conn, self.server.limits
        self.body_read = self.parsed = self.expect_continue = self._connection_header = False
        self.responded = False
        try:
            conn.enter(Phase.WAITING)
            conn.expect(limits.idle_timeout, "idle")
            conn.budget = MAX_HEADER_BYTES  # the first read (up to rbufsize) counts too
            if not self.reader.peek(1):
                self.close_connection = True
                return
            conn.started = time.monotonic()
            conn.expect(limits.header_timeout, "header-time")
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return  # the stdlib answered (400, 431, 505) and closes
            if conn.evicted:  # the headers ended because we shut the socket: not a request
                self.close_connection = True
                return
            conn.budget = None
            self.parsed = True
            conn.enter(Phase.ACTIVE)  # a whole request: answered at once (read_body() may say otherwise)
            conn.expect(limits.request_timeout, "request-time", start=conn.started)
            handler: Callable[[], None] | None = getattr(self, "do_" + self.command, None)
            (handler or self.unsupported_method)()
            self.wfile.flush()
        except Cut as cut:
            self.close_connection = True
            if self.conn.evicted:
                return
            self.server.cut(cut.reason, conn.peer)
            self._answer_cut(cut.reason)

    def _answer_cut(self, reason: str) -> None:
        status = {
            "header-time": HTTPStatus.REQUEST_TIMEOUT,
            "request-time": HTTPStatus.REQUEST_TIMEOUT,
            "header-size": HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        }.get(reason)
        if status is None or self.responded:
            return  # an idle connection is closed without a word (RFC 9112, section 9.5)
        if not hasattr(self, "request_version"):
            self.request_version = "HTTP/1.1"
            self.requestline = ""
            self.command = ""
        self.conn.budget = None
        self.conn.expect(1.0, "write-time")
        with contextlib.suppress(OSError, Cut):
            self.send_error(status)

    def unsupported_method(self) -> None:
        self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"unsupported method {self.command!r}")

    def handle_expect_100(self) -> bool:
        # Not now: only read_body() says "100 Continue", once the request was authenticated.
        self.expect_continue = True
        return True

    # --- the body --------------------------------------------------------------------------------

    def body_pending(self) -> bool:
        """A body was announced and not read (a chunked one counts: we never read those)."""
        if not self.parsed:
            return True  # the request was not understood: whatever follows is not ours to parse
        if self.body_read:
            return False
        return bool(self.headers.get("Transfer-Encoding")) or self.headers.get("Content-Length", "0") != "0"

    def read_body(self, length: int, *, authenticated: bool) -> bytes:
        """Read a body of `length` bytes (the caller checked the length against its limit)."""
        self.conn.enter(Phase.ACTIVE if authenticated else Phase.WAITING)
        if self.expect_continue and length:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.expect_continue = False
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            self.close_connection = True
            raise ConnectionAbortedError("the client closed before the end of its body")
        self.body_read = True
        self.conn.enter(Phase.ACTIVE)
        return data

    # --- the response ----------------------------------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        self.responded = True
        self.conn.enter(Phase.ACTIVE)
        self.conn.expect(self.server.limits.request_timeout, "write-time")
        if self.body_pending():
            # The body stays unread: on a kept-alive connection it would be parsed as the next request.
            self.close_connection = True
            self.conn.unread = True
        if not self.keep_alive():
            self.close_connection = True
        super().send_response(code, message)

    def keep_alive(self) -> bool:
        """Whether this request may keep its connection (and thread) open for the next one."""
        return True

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "connection":
            self._connection_header = True
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        if self.close_connection and not self._connection_header:
            self.send_header("Connection", "close")
        super().end_headers()


class MetricsHandler(BoundedHandler):
    """`GET /metrics` (Prometheus text) of `metrics.REGISTRY`; 404 for any other path."""

    refresh: Callable[[], None] | None = None  # set on the subclass made by `serve_metrics`

    def do_GET(self) -> None:
        if self.path.partition("?")[0] != "/metrics":
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        if self.refresh is not None:
            try:
                self.refresh()
            except Exception:  # a scrape still serves what this process counted (Redis down...)
                log.debug("metrics refresh failed", exc_info=True)
        body = metrics.REGISTRY.render().encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", metrics.CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# The milter's and the LMTP listener's endpoint: one scraper (Prometheus) on loopback needs few
# connections, and it reconnects when an idle one was closed.
METRICS_LIMITS = Limits(max_connections=16, idle_timeout=30.0, header_timeout=5.0, request_timeout=10.0)


def serve_metrics(listen: str, refresh: Callable[[], None] | None = None) -> BoundedServer:
    """metrics.serve: `GET /metrics` at "HOST:PORT" from a daemon thread."""
    host, port = metrics.listen_address(listen)
    bound_refresh = staticmethod(refresh) if refresh else None
    handler = type("BoundMetricsHandler", (MetricsHandler,), {"refresh": bound_refresh})
    server = BoundedServer((host, port), handler, METRICS_LIMITS, "metrics")
    threading.Thread(target=server.serve_forever, name="bk-metrics", daemon=True).start()
    bound = server.server_address
    log.info("metrics on http://%s:%s/metrics (no authentication)", bound[0], bound[1])
    return server


def socket_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
