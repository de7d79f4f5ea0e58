"""A Postfix policy service (SMTPD_POLICY_README) for the routed set-up: no milter on the MX.

A milter costs every SMTP session of an MX its connection, thread and negotiation, even when it accepts at
CONNECT (benchmarks/postfix_throughput.py: 0.6-0.8x of Postfix alone). In the routed set-up
(postfix/routed/) Postfix asks this service only about recipients a `check_recipient_access` table names
(the bounce domain, the protected addresses); every other message never meets bouncekeeper. The answer:

- a VERP address of the bounce domain with a valid signature, or a forged/expired one in observe mode:
  `FILTER transport:destination` (`[milter] policy_filter`): after the queue, the message passes the
  after-queue listener, whose milter classifies, records and drops it (or defers it while Redis is down:
  it waits in our own queue);
- forged or expired in enforce mode: `550 5.7.1` at RCPT, as the milter would answer;
- a protected address: FILTER too (the loop guard runs after the queue);
- anything else (postmaster@ of the bounce domain, a recipient the table should not have named): DUNNO.

The decision needs no Redis (a VERP signature is an HMAC), so mail never waits on the store here. One
connection per smtpd process, kept open by Postfix for many requests; each gets its own thread.

Bounded against clients that are not Postfix, and against SMTP clients guessing VERP tags through it
(docs/hostile.md): `max_connections` at a time (a further one is closed at once), an idle
timeout and a whole-connection deadline, 64 KiB per request; a recipient of the bounce domain with
control, bidi or undecodable characters is `550 5.1.3`; in enforce mode the third forged bounce address
in a run of requests about one client, or the tenth from a client in an hour, is `421 4.7.0`, after
which Postfix disconnects it, and every bounce address from that client gets the same 421 for the rest
of the hour (core/throttle.py). What is cut is counted (bouncekeeper_limited_total{listener="policy"}).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bouncekeeper import config, log
from bouncekeeper.core import addresses, throttle
from bouncekeeper.core.rcpt import Answer, RcptVerdict, bounce_rcpt
from bouncekeeper.core.verp import VerpResult
from bouncekeeper.daemons import metrics
from bouncekeeper.daemons import milter_replies as replies

logger = log.get_logger("bouncekeeper.policyd")  # as before the folders: log filters use it
_DECIDED = metrics.decisions("policy")
_LIMITED = metrics.limited("policy")
# A request is a few hundred octets (about 30 attributes); a peer that sends more is not Postfix.
MAX_REQUEST = 64 * 1024
DUNNO = "DUNNO"  # access(5): no opinion, Postfix goes on with its other restrictions
# The milter's answers (milter_replies.py), as access(5) actions: the MX answers as the milter would.
_TEMPFAIL = " ".join(replies.TEMPFAIL)
BAD_ADDRESS = " ".join(replies.BAD_ADDRESS)
# access(5): after a 421 action Postfix disconnects the SMTP client.
FORGED_CLOSE = " ".join(replies.FORGED_CLOSE)


@dataclass(frozen=True)
class RecipientRouting:
    """Which recipients the service sends through the after-queue filter, and how it answers a bounce
    address, read once at start-up (a subset of the milter's settings): the bounce domain's VERP
    addresses (refused when forged or expired in enforce mode) and the protected recipients go to
    `filter`; every other recipient is left to Postfix (DUNNO)."""

    bounce_domain: str
    protected_recipients: frozenset[str]
    enforce: bool
    filter: str


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may take: an idle read, the whole connection, and how many at a time."""

    idle_timeout: float = 330.0
    session_timeout: float = 1200.0
    max_connections: int = 500

    @classmethod
    def from_settings(cls, settings: config.Settings) -> ConnectionLimits:
        milter = settings.milter
        return cls(milter.policy_timeout, milter.policy_session_timeout, milter.policy_max_connections)


def decide(
    request: Mapping[str, str], routing: RecipientRouting, check_rcpt: Callable[[str], VerpResult]
) -> str:
    """The `action=` value for one request. Pure but for check_rcpt (itself pure: an HMAC, no Redis)."""
    return verdict(request, routing, check_rcpt)[0]


def verdict(
    request: Mapping[str, str],
    routing: RecipientRouting,
    check_rcpt: Callable[[str], VerpResult],
    *,
    guarded: bool = True,
) -> tuple[str, RcptVerdict | None]:
    """`decide`'s action, and the core's verdict on a recipient of the bounce domain (None for others);
    `guarded`: whether the forgery limits apply to the client."""
    rcpt = request.get("recipient", "")
    if request.get("request") != "smtpd_access_policy" or not rcpt:
        return DUNNO, None
    if addresses.unsafe(rcpt):
        # Judged only in the bounce domain: any other recipient is not ours to refuse.
        return (BAD_ADDRESS if _in_bounce_domain(rcpt, routing) else DUNNO), None
    address = addresses.normalise(rcpt)
    if (
        address is not None
        and routing.bounce_domain
        and addresses.domain_of(address) == routing.bounce_domain
    ):
        judged = bounce_rcpt(check_rcpt(address), enforce=routing.enforce, guarded=guarded)
        if judged.answer is not Answer.NOT_VERP:
            return _action(judged, routing), judged
    return (f"FILTER {routing.filter}" if address in routing.protected_recipients else DUNNO), None


def _action(judged: RcptVerdict, routing: RecipientRouting) -> str:
    """The `action=` for the core's verdict on a VERP address of the bounce domain (core/rcpt.py)."""
    if judged.answer is Answer.REFUSE:
        return " ".join(judged.refusal())
    # Valid, or forged/expired in observe mode (recorded as forged after the queue).
    return f"FILTER {routing.filter}"


def _in_bounce_domain(rcpt: str, routing: RecipientRouting) -> bool:
    return bool(routing.bounce_domain) and addresses.rcpt_domain(rcpt) == routing.bounce_domain


def parse_request(lines: list[bytes]) -> dict[str, str]:
    """`name=value` lines without their line ends; values may hold "=". Postfix sends UTF-8; bytes that
    are not are kept as lone surrogates, which `addresses.unsafe` refuses in a recipient."""
    request: dict[str, str] = {}
    for line in lines:
        name, eq, value = line.decode("utf-8", "surrogateescape").partition("=")
        if eq:
            request[name.strip()] = value
    return request


@dataclass
class Session:
    """A run of requests about one SMTP client on one connection (Postfix sends a client's in a row)."""

    client: str = ""
    forged: int = 0


class _Handler(socketserver.StreamRequestHandler):
    server: PolicyServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)  # per read: an idle connection ends

    def handle(self) -> None:
        session = Session()
        while True:
            try:
                lines = self._read()
            except TimeoutError:
                logger.cut("idle", "policy connection idle for %.0f s, closed", self.server.idle_timeout)
                _LIMITED["idle"].inc()
                return
            if lines is None:
                return
            action = self.server.answer(parse_request(lines), session)
            self.wfile.write(f"action={action}\n\n".encode())
            self.wfile.flush()

    def _read(self) -> list[bytes] | None:
        """One request's lines; None when the connection is over (closed by Postfix, or too long)."""
        lines: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(MAX_REQUEST)
            if not line:
                return None  # Postfix closed the connection (idle or ttl limit), or our deadline
            size += len(line)
            if size > MAX_REQUEST:
                logger.cut("request-size", "policy request over %d octets, connection closed", MAX_REQUEST)
                _LIMITED["request-size"].inc()
                return None
            if line in (b"\n", b"\r\n"):
                return lines
            lines.append(line.rstrip(b"\r\n"))


class PolicyServer(socketserver.ThreadingMixIn, socketserver.BaseServer):
    """Threaded stream server on a unix or TCP socket, answering with `decide`."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        spec: str,
        routing: RecipientRouting,
        mode: int = 0o660,
        *,
        limits: ConnectionLimits | None = None,
    ) -> None:
        limits = limits or ConnectionLimits()
        self.spec = spec
        self.routing = routing
        self.idle_timeout = limits.idle_timeout
        self.session_timeout = limits.session_timeout
        self.max_connections = limits.max_connections
        self.forgery = throttle.ForgeryLimit()
        # Open connections and their deadlines; the reaper thread shuts down those past it.
        self._open: dict[socket.socket, float] = {}
        self._open_lock = threading.Lock()
        self._stopping = threading.Event()
        self.check_rcpt: Callable[[str], VerpResult] | None = None  # set once the runtime exists
        self.path: pathlib.Path | None = None
        address: str | tuple[str, int]
        if spec.startswith("unix:"):
            self.path = pathlib.Path(spec.removeprefix("unix:"))
            family, address = socket.AF_UNIX, str(self.path)
            with contextlib.suppress(FileNotFoundError):
                if self.path.is_socket():
                    self.path.unlink()  # stale, from a crash: the milter daemon replaces its own too
        else:  # inet:PORT@HOST
            port, _, host = spec.removeprefix("inet:").partition("@")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            address = (host or "127.0.0.1", int(port))
        super().__init__(address, _Handler)
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        if family != socket.AF_UNIX:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        old_umask = os.umask(0o777 & ~mode)
        try:
            self.socket.bind(address)
        finally:
            os.umask(old_umask)
        if self.path is not None:
            os.chmod(self.path, mode)
        self.socket.listen(128)
        self._thread: threading.Thread | None = None

    # socketserver.TCPServer's plumbing, for either family.
    def fileno(self) -> int:
        return self.socket.fileno()

    def get_request(self) -> tuple[socket.socket, object]:
        return self.socket.accept()

    def verify_request(self, request: socket.socket, client_address: object) -> bool:  # type: ignore[override]
        with self._open_lock:
            if len(self._open) >= self.max_connections:
                full = True
            else:
                full = False
                self._open[request] = time.monotonic() + self.session_timeout
        if full:
            logger.cut(
                "connections", "policy connection over max_connections=%d closed", self.max_connections
            )
            _LIMITED["connections"].inc()
        return not full

    def reap(self) -> None:
        """Shut down the connections past their deadline (their threads then see the end of input)."""
        now = time.monotonic()
        with self._open_lock:
            over = [conn for conn, deadline in self._open.items() if deadline <= now]
            for conn in over:
                self._open[conn] = float("inf")  # once
        for conn in over:
            logger.cut("session", "policy connection open for %.0f s, closed", self.session_timeout)
            _LIMITED["session"].inc()
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _reaper(self) -> None:
        while not self._stopping.wait(min(1.0, self.session_timeout / 4)):
            self.reap()

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._open_lock:
            self._open.pop(request, None)
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
        request.close()

    def close_request(self, request: socket.socket) -> None:  # type: ignore[override]
        request.close()

    def handle_error(self, request: object, client_address: object) -> None:
        # socketserver prints a traceback to stderr; a peer that went away mid-request is routine.
        logger.warning("policy connection ended with an error: %r", sys.exc_info()[1])

    def answer(self, request: Mapping[str, str], session: Session | None = None) -> str:
        token = log.queue_id.set(request.get("queue_id") or "-")
        try:
            if self.check_rcpt is None:
                raise RuntimeError("policy service not ready")
            client = request.get("client_address", "")
            guarded = self.routing.enforce and bool(client)
            if (
                guarded
                and _in_bounce_domain(request.get("recipient", ""), self.routing)
                and self.forgery.blocked(client, time.monotonic())
            ):
                # Valid or not, the same answer: while blocked, RCPT tells nothing about a guess.
                logger.cut("forged-client", "client %s over the forged-address limit, 421", client)
                _LIMITED["forged-client"].inc()
                return FORGED_CLOSE
            action, judged = verdict(request, self.routing, self.check_rcpt, guarded=guarded)
            if action == BAD_ADDRESS:
                metrics.bad_address(logger, _LIMITED, _DECIDED, request.get("recipient", ""))
                return action
            if judged is not None and judged.guess:
                action = self._forged(client, session or Session(), action)
            if action != DUNNO:
                _DECIDED["reject" if action[:1] in "45" else "filter"].inc()
                rcpt = request.get("recipient", "")
                logger.info(
                    "policy rcpt=%s sender=<%s> client=%s action=%s",
                    ascii(rcpt) if addresses.unsafe(rcpt) else rcpt,
                    ascii(request.get("sender", "")),
                    ascii(client),
                    action,
                )
            return action
        # Never a 5xx for our own error (the MX's default_action for this service is a 4xx too).
        except Exception as exc:  # noqa: BLE001
            logger.error("policy: internal error, answering %s: %r", _TEMPFAIL, exc)
            _DECIDED["tempfail"].inc()
            return _TEMPFAIL
        finally:
            log.queue_id.reset(token)

    def _forged(self, client: str, session: Session, action: str) -> str:
        """Count a forged bounce address from `client`: its 550, or the 421 that ends it."""
        if session.client != client:
            session.client, session.forged = client, 0
        session.forged += 1
        blocked = self.forgery.forged(client, time.monotonic())
        if not blocked and session.forged < throttle.PER_SESSION:
            return action
        logger.cut("forged-close", "client %s sent %d forged bounce addresses, 421", client, session.forged)
        _LIMITED["forged-client" if blocked else "forged-session"].inc()
        return FORGED_CLOSE

    def start(self, check_rcpt: Callable[[str], VerpResult]) -> None:
        self.check_rcpt = check_rcpt
        self._thread = threading.Thread(target=self.serve_forever, name="policy", daemon=True)
        self._thread.start()
        threading.Thread(target=self._reaper, name="policy-reaper", daemon=True).start()
        logger.info("policy service listening on %s", self.spec)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()
        self.socket.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
