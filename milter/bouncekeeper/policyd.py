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
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bouncekeeper import log, metrics
from bouncekeeper.core import addresses
from bouncekeeper.core.verp import VerpResult, VerpStatus

logger = log.get_logger(__name__)
_DECIDED = metrics.decisions("policy")
# A request is a few hundred octets (about 30 attributes); a peer that sends more is not Postfix.
MAX_REQUEST = 64 * 1024
_TEMPFAIL = "451 4.3.0 Temporary local problem, please try again later"


@dataclass(frozen=True)
class PolicyRules:
    """What the service decides from, read once at start-up (a subset of the milter's policy)."""

    bounce_domain: str
    protected_recipients: frozenset[str]
    enforce: bool
    filter: str


def decide(request: Mapping[str, str], rules: PolicyRules, check_rcpt: Callable[[str], VerpResult]) -> str:
    """The `action=` value for one request. Pure but for check_rcpt (itself pure: an HMAC, no Redis)."""
    rcpt = request.get("recipient", "")
    if request.get("request") != "smtpd_access_policy" or not rcpt:
        return "DUNNO"
    address = addresses.normalise(rcpt)
    if address is None:
        return "DUNNO"
    if rules.bounce_domain and addresses.domain_of(address) == rules.bounce_domain:
        result = check_rcpt(address)
        if result.status in (VerpStatus.FORGED, VerpStatus.EXPIRED) and rules.enforce:
            return f"550 5.7.1 Not a valid bounce address ({result.status})"
        if result.status != VerpStatus.NOT_VERP:
            # Valid, or forged/expired in observe mode (recorded as forged after the queue).
            return f"FILTER {rules.filter}"
    if address in rules.protected_recipients:
        return f"FILTER {rules.filter}"
    return "DUNNO"


def parse_request(lines: list[bytes]) -> dict[str, str]:
    """`name=value` lines without their line ends; values may hold "=". Postfix sends UTF-8; bytes that
    are not become U+FFFD, which no address we answer for contains."""
    request: dict[str, str] = {}
    for line in lines:
        name, eq, value = line.decode("utf-8", "replace").partition("=")
        if eq:
            request[name.strip()] = value
    return request


class _Handler(socketserver.StreamRequestHandler):
    server: PolicyServer

    def handle(self) -> None:
        while True:
            lines: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(MAX_REQUEST)
                if not line:
                    return  # Postfix closed the connection (idle or ttl limit)
                size += len(line)
                if size > MAX_REQUEST:
                    logger.warning("policy request over %d octets, connection closed", MAX_REQUEST)
                    return
                if line in (b"\n", b"\r\n"):
                    break
                lines.append(line.rstrip(b"\r\n"))
            request = parse_request(lines)
            action = self.server.answer(request)
            self.wfile.write(f"action={action}\n\n".encode())
            self.wfile.flush()


class PolicyServer(socketserver.ThreadingMixIn, socketserver.BaseServer):
    """Threaded stream server on a unix or TCP socket, answering with `decide`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, spec: str, rules: PolicyRules, mode: int = 0o660) -> None:
        self.spec = spec
        self.rules = rules
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

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
        request.close()

    def close_request(self, request: socket.socket) -> None:  # type: ignore[override]
        request.close()

    def handle_error(self, request: object, client_address: object) -> None:
        # socketserver prints a traceback to stderr; a peer that went away mid-request is routine.
        logger.warning("policy connection ended with an error: %r", sys.exc_info()[1])

    def answer(self, request: Mapping[str, str]) -> str:
        token = log.queue_id.set(request.get("queue_id") or "-")
        try:
            if self.check_rcpt is None:
                raise RuntimeError("policy service not ready")
            action = decide(request, self.rules, self.check_rcpt)
            if action != "DUNNO":
                _DECIDED["reject" if action.startswith("5") else "filter"].inc()
                logger.info(
                    "policy rcpt=%s sender=<%s> client=%s action=%s",
                    request.get("recipient", ""),
                    request.get("sender", ""),
                    request.get("client_address", ""),
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

    def start(self, check_rcpt: Callable[[str], VerpResult]) -> None:
        self.check_rcpt = check_rcpt
        self._thread = threading.Thread(target=self.serve_forever, name="policy", daemon=True)
        self._thread.start()
        logger.info("policy service listening on %s", self.spec)

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()
        self.socket.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
