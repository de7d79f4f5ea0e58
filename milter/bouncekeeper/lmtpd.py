"""The LMTP (and SMTP) listener: bounces that an MTA delivers to us, through the same service as the milter.

For Exim, which has no milter, and for sites that forward their bounces to a separate box. This module
only translates: the RCPT check is `Service.check_rcpt` (a pure VERP decode), the message goes through
`Service.process_bounce`, and the answers follow the rules every adapter shares:

- RCPT outside the bounce domain: 550 5.1.1. A forged or expired VERP address: 550 5.7.1 in enforce
  mode; accepted and recorded as forged in observe mode.
- After DATA, LMTP answers once per accepted recipient, in order (RFC 2033 section 4.2): 250 once the
  event is stored, 451 4.3.0 when Redis is unreachable or anything fails inside. Never 5xx for a
  malformed bounce: the classifier records it as unrecognised. aiosmtpd answers an exception with 500;
  we answer 451 4.3.0 (the MTA keeps the message and retries).
- Plain SMTP has one reply for all recipients: 250 when every one was stored, else 451 4.3.0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from bouncekeeper import config, log, metrics
from bouncekeeper.core.verp import VerpStatus
from bouncekeeper.service import Service
from bouncekeeper.store import StoreUnavailable
from bouncekeeper.store.event import Source

logger = log.get_logger(__name__)

# Reply texts (RFC 3463 enhanced status codes).
OK_RCPT = "250 2.1.5 OK"
NOT_OURS = "550 5.1.1 <{}>: not a bounce address here"
FORGED = "550 5.7.1 <{}>: bounce address forged or expired"
STORED = "250 2.0.0 <{}> bounce recorded"
TEMPFAIL = "451 4.3.0 <{}> cannot record the bounce now, try again later"
STORED_ALL = "250 2.0.0 bounce recorded"
TEMPFAIL_ALL = "451 4.3.0 cannot record the bounce now, try again later"
TOO_BIG = "552 5.3.4 message too big for a bounce"
# How long a shutdown waits for messages being processed before it closes their sessions.
SHUTDOWN_GRACE = 10.0
# bouncekeeper_decisions_total{source="lmtp"} (the SMTP listener counts there too: same Source).
_DECIDED = metrics.decisions(Source.LMTP.value)


class _Envelope:
    """Per-transaction state that aiosmtpd's Envelope has no field for."""

    def __init__(self) -> None:
        self.forged: dict[str, bool] = {}


def _state(envelope: Any) -> _Envelope:
    state = getattr(envelope, "bouncekeeper", None)
    if not isinstance(state, _Envelope):
        state = _Envelope()
        envelope.bouncekeeper = state
    return state


class Handler:
    """aiosmtpd's handler hooks, for both protocols; the service does the work in worker threads."""

    def __init__(
        self, service: Service, settings: config.Settings, pool: concurrent.futures.Executor
    ) -> None:
        self.service = service
        self.bounce_domain = settings.verp.bounce_domain.lower().rstrip(".")
        self.plain_local = settings.verp.local_prefix.lower()
        self.enforce = settings.policy.mode == "enforce"
        self.pool = pool
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        local, _, domain = address.lower().rpartition("@")
        if domain.rstrip(".") != self.bounce_domain or not self.bounce_domain:
            _DECIDED["reject"].inc()
            return NOT_OURS.format(address)
        result = self.service.check_rcpt(address)
        forged = False
        if result.status is VerpStatus.NOT_VERP:
            # The plain bounce address (bounces@bounce_domain) is ours too: its bounces are classified
            # from their content alone. Anything else at the domain is not an address we gave out.
            if local != self.plain_local:
                _DECIDED["reject"].inc()
                return NOT_OURS.format(address)
        elif result.status is not VerpStatus.VALID:
            if self.enforce:
                logger.info("refused rcpt=%s verp=%s", address, result.status)
                _DECIDED["reject"].inc()
                return FORGED.format(address)
            forged = True  # observe mode: accept, record as forged, never score it
        envelope.rcpt_tos.append(address)
        _state(envelope).forged[address] = forged
        return OK_RCPT

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or b""
        sender = (envelope.mail_from or "").strip()
        sender = "" if sender in ("<>", "") else sender.strip("<>")
        peer = session.peer[0] if isinstance(session.peer, tuple) else "unix"
        forged = _state(envelope).forged
        qid = uuid.uuid4().hex[:12]  # one id per message, on every log line about it
        replies: list[str] = []
        self.in_flight += 1
        self.idle.clear()
        try:
            for rcpt in envelope.rcpt_tos:
                ok = await self._process(
                    raw, rcpt, sender=sender, peer=peer, qid=qid, forged=forged.get(rcpt, False)
                )
                replies.append(STORED.format(rcpt) if ok else TEMPFAIL.format(rcpt))
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
        if isinstance(server, LMTP):
            return "\r\n".join(replies)  # RFC 2033 section 4.2: one reply per recipient, in order
        # SMTP: one answer for all. A retry after a partial failure records the stored ones again; the
        # store counts a redelivered bounce once (its dedup window).
        return STORED_ALL if all(r.startswith("2") for r in replies) else TEMPFAIL_ALL

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer 500: an internal error must never bounce mail (STYLE.md).
        logger.error("session error: %r", error, exc_info=error)
        _DECIDED["tempfail"].inc()
        return TEMPFAIL_ALL

    async def _process(
        self, raw: bytes, rcpt: str, *, sender: str, peer: str, qid: str, forged: bool
    ) -> bool:
        def work() -> bool:
            log.queue_id.set(qid)
            try:
                with metrics.timed("process_bounce"):
                    outcome = self.service.process_bounce(
                        raw,
                        envelope_rcpt=rcpt,
                        envelope_sender=sender,
                        source=Source.LMTP,
                        client_addr=peer,
                        queue_id=qid,
                        forged=forged,
                    )
            except StoreUnavailable as exc:
                logger.warning("store unavailable, answering 451 rcpt=%s: %s", rcpt, exc)
                _DECIDED["tempfail"].inc()
                return False
            except Exception:  # any failure inside is a 451: never a lost or bounced bounce
                logger.exception("processing failed, answering 451 rcpt=%s", rcpt)
                _DECIDED["tempfail"].inc()
                return False
            metrics.observe(Source.LMTP.value, outcome)
            _DECIDED["accept"].inc()
            logger.info("%s", outcome.summary())
            return True

        loop = asyncio.get_running_loop()
        # A fresh context per message: the queue id set in the worker stays with this message's lines.
        return await loop.run_in_executor(self.pool, contextvars.copy_context().run, work)


class _Protocol:
    """What both aiosmtpd protocol classes get from us (mixed in before them).

    - the session leaves the listener's set when its connection goes (for a clean shutdown);
    - aiosmtpd's own answers after DATA (552 for size) are repeated once per recipient under LMTP, as
      RFC 2033 section 4.2 requires: a single answer would leave the client waiting for the others.
    """

    sessions: set[Any]
    envelope: Any
    _data_rcpts = 0

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)  # type: ignore[misc]  # the aiosmtpd class after us in the MRO
        self.sessions.discard(self)

    async def smtp_DATA(self, arg: str) -> None:
        self._data_rcpts = 0
        try:
            await super().smtp_DATA(arg)  # type: ignore[misc]  # aiosmtpd, after us in the MRO
        finally:
            self._data_rcpts = 0

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            if status.startswith("552 Error: Too much mail data"):
                status = TOO_BIG
                for _ in range(max(self._data_rcpts, 1)):
                    _DECIDED["reject"].inc()
            if status.startswith("354") and self.envelope is not None:
                self._data_rcpts = len(self.envelope.rcpt_tos)
            elif (
                self._data_rcpts > 1
                and isinstance(self, LMTP)
                and "\r\n" not in status
                and status[:1] in "45"
            ):
                status = "\r\n".join([status] * self._data_rcpts)
        await super().push(status)  # type: ignore[misc]  # aiosmtpd, after us in the MRO


class _SmtpProtocol(_Protocol, SMTP):
    pass


class _LmtpProtocol(_Protocol, LMTP):
    pass


def _parse(listen: str) -> tuple[str, int] | str:
    """ "unix:/path" -> the path; "HOST:PORT" ("[::1]:PORT") -> (host, port)."""
    if listen.startswith("unix:"):
        return listen.removeprefix("unix:")
    return _tcp(listen)


def _tcp(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class Listener:
    """The LMTP server (and the optional SMTP one) on one event loop."""

    def __init__(self, service: Service, settings: config.Settings) -> None:
        self.settings = settings
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.lmtp.workers, thread_name_prefix="bk-lmtp"
        )
        self.handler = Handler(service, settings, self.pool)
        self.servers: list[asyncio.Server] = []
        self.sessions: set[Any] = set()
        self.unix_path: str | None = None
        self.addresses: list[tuple[str, int] | str] = []

    def _factory(self, base: type[Any]) -> Callable[[], Any]:
        lmtp = self.settings.lmtp
        hostname = lmtp.hostname or socket.gethostname()
        # aiosmtpd's default line limit (1001 octets) answers 500 to a message with a longer line: a
        # malformed bounce is no reason for a 5xx. The size limit bounds the memory instead.
        cls = type(
            base.__name__, (base,), {"line_length_limit": lmtp.max_message_size, "sessions": self.sessions}
        )

        def make() -> Any:
            protocol = cls(
                self.handler,
                data_size_limit=lmtp.max_message_size,
                enable_SMTPUTF8=True,
                hostname=hostname,
                timeout=lmtp.timeout,
            )
            self.sessions.add(protocol)
            return protocol

        return make

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        lmtp = self.settings.lmtp
        where = _parse(lmtp.listen)
        factory = self._factory(_LmtpProtocol)
        if isinstance(where, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(where)  # a stale socket from a previous run
            server = await loop.create_unix_server(factory, where)
            os.chmod(where, lmtp.socket_mode)
            self.unix_path = where
            self.addresses.append(where)
        else:
            server = await loop.create_server(factory, where[0], where[1])
            self.addresses.append(server.sockets[0].getsockname()[:2])
        self.servers.append(server)
        logger.info("lmtp listening on %s", lmtp.listen)
        if lmtp.smtp_listen:
            host, port = _tcp(lmtp.smtp_listen)  # TCP only: the config refuses "unix:" here
            smtp = await loop.create_server(self._factory(_SmtpProtocol), host, port)
            self.servers.append(smtp)
            self.addresses.append(smtp.sockets[0].getsockname()[:2])
            logger.info("smtp listening on %s", lmtp.smtp_listen)

    async def stop(self) -> None:
        """Stop accepting; let messages being processed finish (bounded); close the rest."""
        for server in self.servers:
            server.close()
        try:
            await asyncio.wait_for(self.handler.idle.wait(), SHUTDOWN_GRACE)
        except TimeoutError:
            logger.warning("shutdown: %d messages still in progress, closing", self.handler.in_flight)
        for session in list(self.sessions):
            # An unanswered message is not lost: the MTA keeps it and retries.
            if session.transport is not None:
                session.transport.close()
        for server in self.servers:
            await server.wait_closed()
        if self.unix_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)
        self.pool.shutdown(wait=True)
        logger.info("listener stopped")


async def serve(
    service: Service, settings: config.Settings, ready: Callable[[Listener], Awaitable[None]] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    listener = Listener(service, settings)
    await listener.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        await ready(listener)
    await stop.wait()
    await listener.stop()


def run(service: Service, settings: config.Settings) -> int:
    """`bouncekeeper lmtp`: the listener in the foreground."""
    asyncio.run(serve(service, settings))
    return 0
