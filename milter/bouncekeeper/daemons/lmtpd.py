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

Against hostile clients (docs/hostile.md) every session is bounded: the message is classified once whatever
the number of recipients (duplicates are answered from the one result); `max_recipients` per
transaction (452 4.5.3 beyond); a command line is read at most `COMMAND_LINE_LIMIT` octets at a time
and answered 500 when longer (never buffered whole); `max_connections` sessions (421 4.3.2 beyond); an
idle `timeout` and a whole-session `session_timeout`; a recipient with control, bidi or undecodable
characters is 550 5.1.3; repeated forged bounce addresses close the session and are limited per client
(core/throttle.py). What is cut is logged and counted (bouncekeeper_limited_total{listener="lmtp"}).
The greeting names no software or version.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import ipaddress
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from bouncekeeper import config, log
from bouncekeeper.core import addresses, throttle
from bouncekeeper.core.rcpt import Answer, RcptVerdict, bounce_rcpt
from bouncekeeper.daemons import metrics
from bouncekeeper.service.bounces import Arrival, Service
from bouncekeeper.store import StoreUnavailable
from bouncekeeper.store.event import Source

logger = log.get_logger("bouncekeeper.lmtpd")  # as before the folders: log filters use it

# Reply texts (RFC 3463 enhanced status codes).
OK_RCPT = "250 2.1.5 OK"
NOT_OURS = "550 5.1.1 <{}>: not a bounce address here"
STORED = "250 2.0.0 <{}> bounce recorded"
TEMPFAIL = "451 4.3.0 <{}> cannot record the bounce now, try again later"
STORED_ALL = "250 2.0.0 bounce recorded"
TEMPFAIL_ALL = "451 4.3.0 cannot record the bounce now, try again later"
TOO_BIG = "552 5.3.4 message too big for a bounce"
BAD_ADDRESS = "550 5.1.3 bad recipient address syntax"  # never echoes the address: it is what is bad
TOO_MANY_RCPTS = "452 4.5.3 too many recipients"
TOO_MANY_CLOSE = "421 4.5.3 too many recipients, closing connection"
FORGED_CLOSE = "421 4.7.0 too many invalid bounce addresses, closing connection"
TOO_MANY_SESSIONS = b"421 4.3.2 too many connections, try again later\r\n"
SESSION_OVER = "421 4.4.2 session time limit reached, closing connection"
IDLE_OVER = "421 4.4.2 idle too long, closing connection"
# After a 421 the input is read and dropped for this long, then the connection closes: closing with
# pipelined commands unread would reset it, and the client could lose the 421 itself.
CLOSE_GRACE = 2.0
# RFC 5321 section 4.5.3.1.4: a command line is at most 512 octets; aiosmtpd allows 548 with the
# SIZE and SMTPUTF8 parameters. Reading stops at this much, so a longer line is never held whole.
COMMAND_LINE_LIMIT = 1024
# How long a shutdown waits for messages being processed before it closes their sessions.
SHUTDOWN_GRACE = 10.0
# bouncekeeper_decisions_total{source="lmtp"} (the SMTP listener counts there too: same Source).
_DECIDED = metrics.decisions(Source.LMTP.value)
_LIMITED = metrics.limited("lmtp")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Envelope:
    """Per-transaction state that aiosmtpd's Envelope has no field for."""

    def __init__(self) -> None:
        self.verdicts: dict[str, RcptVerdict] = {}  # of each accepted recipient, at RCPT
        self.over = 0  # RCPTs refused for max_recipients


def _refusal(address: str, verdict: RcptVerdict) -> str:
    code, status, text = verdict.refusal()
    return f"{code} {status} <{address}>: {text}"


def _peer(session: Any) -> str:
    return str(session.peer[0]) if isinstance(session.peer, tuple) else "unix"


def _trusted(peer: object, networks: tuple[Network, ...]) -> bool:
    """Whether a peer is the MTA in front (`[lmtp] trusted_clients`, or any client of a unix socket)."""
    if not isinstance(peer, tuple):
        return True  # a unix socket: only the MTA may write to it
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except ValueError:
        return False
    return any(ip in network for network in networks)


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
        self.reconfigure(service, settings)
        self.forgery = throttle.ForgeryLimit()
        # The workers stay until a restart, and so does the untrusted clients' share of them.
        self.untrusted = asyncio.Semaphore(max(1, settings.lmtp.workers // 2))
        self.pool = pool
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def reconfigure(self, service: Service, settings: config.Settings) -> None:
        """Take these settings (at start, and on SIGHUP); a message in progress keeps its recipients."""
        self.service = service
        self.bounce_domain = settings.verp.bounce_domain
        self.plain_local = settings.verp.local_prefix.lower()
        self.enforce = settings.policy.mode == "enforce"
        self.max_recipients = settings.lmtp.max_recipients
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in settings.lmtp.trusted_clients)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if getattr(server, "_closing", False):
            return FORGED_CLOSE  # a command pipelined after our 421: not looked at, never answered
        limited = self._limited(session, envelope, address)
        if limited is not None:
            return limited
        local = address.lower().rpartition("@")[0]
        if addresses.rcpt_domain(address) != self.bounce_domain or not self.bounce_domain:
            _DECIDED["reject"].inc()
            return NOT_OURS.format(address)
        return self._bounce_rcpt(session, envelope, address, plain=local == self.plain_local)

    def _limited(self, session: Any, envelope: Any, address: str) -> str | None:
        """The answer to a recipient refused before its address is looked at (None when it is not):
        characters no address has, or one recipient too many."""
        if addresses.unsafe(address):
            # Also what bytes that are not UTF-8 become (surrogateescape): an answer, not a traceback.
            metrics.bad_address(logger, _LIMITED, _DECIDED, address)
            return BAD_ADDRESS
        if len(envelope.rcpt_tos) < self.max_recipients:
            return None
        state = _state(envelope)
        state.over += 1
        _LIMITED["recipients"].inc()
        if state.over == 1:  # one line per transaction, not per RCPT
            logger.cut(
                "recipients", "recipients over max_recipients=%d from %s", self.max_recipients, _peer(session)
            )
        if state.over > self.max_recipients and not self._trusted(session):
            # A client that goes on after as many 452s as it had recipients is not sending mail:
            # each RCPT still costs aiosmtpd's address parser (benchmarks/hostile.py).
            logger.cut(
                "recipients-close",
                "client %s sent %d recipients over the limit, closing",
                _peer(session),
                state.over,
            )
            return TOO_MANY_CLOSE
        return TOO_MANY_RCPTS

    def _bounce_rcpt(self, session: Any, envelope: Any, address: str, *, plain: bool) -> str:
        """RCPT to an address of the bounce domain: the core's verdict (core/rcpt.py) in LMTP's words;
        `plain`: the address is the plain bounce address (`local_prefix`@bounce_domain)."""
        guarded = self.enforce and not self._trusted(session)
        if guarded and self.forgery.blocked(_peer(session), time.monotonic()):
            # The same answer whatever the address: while blocked, RCPT says nothing about a guess.
            logger.cut("forged-client", "client %s over the forged-address limit, closing", _peer(session))
            _LIMITED["forged-client"].inc()
            return FORGED_CLOSE
        verdict = bounce_rcpt(self.service.check_rcpt(address), enforce=self.enforce, guarded=guarded)
        if verdict.answer is Answer.NOT_VERP and not plain:
            # The plain bounce address (bounces@bounce_domain) is ours too: its bounces are classified
            # from their content alone. Anything else at the domain is not an address we gave out.
            _DECIDED["reject"].inc()
            return NOT_OURS.format(address)
        if verdict.answer is Answer.REFUSE:
            logger.info("refused rcpt=%s verp=%s", address, verdict.status)
            _DECIDED["reject"].inc()
            return self._forged(session, address, verdict) if verdict.guess else _refusal(address, verdict)
        envelope.rcpt_tos.append(address)
        # Observe mode takes a forged or expired address: recorded as forged, never scored.
        _state(envelope).verdicts[address] = verdict
        return OK_RCPT

    def _trusted(self, session: Any) -> bool:
        return _trusted(session.peer, self.trusted)

    def _forged(self, session: Any, address: str, verdict: RcptVerdict) -> str:
        """The answer to a forged bounce address from a client the limits apply to."""
        peer = _peer(session)
        blocked = self.forgery.forged(peer, time.monotonic())
        count = getattr(session, "bouncekeeper_forged", 0) + 1
        session.bouncekeeper_forged = count
        if count >= throttle.PER_SESSION or blocked:
            logger.cut("forged-close", "client %s sent %d forged bounce addresses, closing", peer, count)
            _LIMITED["forged-session" if not blocked else "forged-client"].inc()
            return FORGED_CLOSE
        return _refusal(address, verdict)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if getattr(server, "_closing", False):
            return TEMPFAIL_ALL  # pipelined after our 421: never answered, so never recorded
        raw: bytes = envelope.original_content or b""
        sender = (envelope.mail_from or "").strip()
        sender = "" if sender in ("<>", "") else sender.strip("<>")
        # Classified once for all its recipients; a recipient named twice is processed once and
        # answered twice from the one result (RFC 2033: one reply per accepted RCPT).
        classified = self.service.triage(raw, envelope_sender=sender)
        message = Arrival(
            raw,
            Source.LMTP,
            envelope_sender=sender,
            client_addr=_peer(session),
            queue_id=uuid.uuid4().hex[:12],  # one id per message, on every log line about it
            classified=classified,
        )
        self.in_flight += 1
        self.idle.clear()
        # Clients other than the MTA in front share half the workers: however heavy their messages,
        # the MTA's bounces never queue behind them (benchmarks/hostile.py).
        slot = contextlib.nullcontext() if self._trusted(session) else self.untrusted
        try:
            async with slot:
                answers = await self._each(envelope, message)
            if classified.limits:
                _LIMITED["classification"].inc()  # once per message; the service logged which caps
            replies = [answers[rcpt] for rcpt in envelope.rcpt_tos]
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
        if isinstance(server, LMTP):
            return "\r\n".join(replies)  # RFC 2033 section 4.2: one reply per recipient, in order
        # SMTP: one answer for all. A retry after a partial failure records the stored ones again; the
        # store counts a redelivered bounce once (its dedup window).
        return STORED_ALL if all(r.startswith("2") for r in replies) else TEMPFAIL_ALL

    async def _each(self, envelope: Any, message: Arrival) -> dict[str, str]:
        """Process the message for each distinct recipient, with its verdict at RCPT: each one's reply."""
        answers: dict[str, str] = {}
        verdicts = _state(envelope).verdicts
        for rcpt in dict.fromkeys(envelope.rcpt_tos):
            ok = await self._process(dataclasses.replace(message, envelope_rcpt=rcpt, verdict=verdicts[rcpt]))
            answers[rcpt] = STORED.format(rcpt) if ok else TEMPFAIL.format(rcpt)
        return answers

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer 500: an internal error must never bounce mail: 451, retried.
        logger.error("session error: %r", error, exc_info=error)
        _DECIDED["tempfail"].inc()
        return TEMPFAIL_ALL

    async def _process(self, arrival: Arrival) -> bool:
        """The message recorded for one recipient, in a worker thread: whether it was (250) or not (451)."""
        rcpt = arrival.envelope_rcpt

        def work() -> bool:
            log.queue_id.set(arrival.queue_id or "-")
            try:
                with metrics.timed("process_bounce"):
                    outcome = self.service.process_bounce(arrival)
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
      RFC 2033 section 4.2 requires: a single answer would leave the client waiting for the others;
    - command lines are read `COMMAND_LINE_LIMIT` octets at a time, message lines up to the size limit;
    - a 421 closes the connection (RFC 5321 section 3.8); the session's deadline closes it too.
    """

    sessions: set[Any]
    envelope: Any
    transport: Any
    line_length_limit: int
    data_line_limit: int  # set by Listener._factory: the message size limit
    session_timeout: float
    max_connections: int
    event_handler: Handler  # aiosmtpd's name for the handler it was given
    _reader: Any
    _data_rcpts = 0
    _deadline: asyncio.TimerHandle | None = None
    _closing = False
    _refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        if len(self.sessions) > self.max_connections and not _trusted(peer, self.event_handler.trusted):
            # Over the cap: refused before any session exists. The MTA in front is never refused, so
            # that a flood of idle connections cannot keep its bounces out.
            logger.cut(
                "connections",
                "connection from %s over max_connections=%d refused",
                peer,
                self.max_connections,
            )
            _LIMITED["connections"].inc()
            self._refused = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(TOO_MANY_SESSIONS)
            transport.close()
            return
        super().connection_made(transport)  # type: ignore[misc]  # the aiosmtpd class after us in the MRO
        if self._deadline is None:  # not again after STARTTLS
            self._deadline = asyncio.get_running_loop().call_later(self.session_timeout, self._over)

    def _over(self) -> None:
        if self.transport is not None and not self._closing:
            logger.cut("session", "session open for %.0f s, closing", self.session_timeout)
            _LIMITED["session"].inc()
            self._close_after(SESSION_OVER)

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self._closing:
            _LIMITED["idle"].inc()
            self._close_after(IDLE_OVER)

    def _close_after(self, reply: str) -> None:
        """Send `reply` (a 421), then nothing more; drop what the client still sends; close."""
        transport = self.transport
        self._closing = True
        transport.write(reply.encode() + b"\r\n")
        if transport.can_write_eof():
            transport.write_eof()
        # What was read but not yet parsed (a pipelined burst: up to 256 KiB, thousands of commands)
        # is dropped too, as aiosmtpd does at STARTTLS: parsing it would answer nobody.
        self._reader._buffer.clear()
        transport.resume_reading()  # the reader may have paused it: drain into data_received
        asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._closing:
            super().data_received(data)  # type: ignore[misc]  # aiosmtpd, after us in the MRO

    def eof_received(self) -> bool | None:
        if self._closing:
            self.transport.close()  # the client has read the 421 and gone
            return None
        result: bool | None = super().eof_received()  # type: ignore[misc]  # aiosmtpd, after us
        return result

    def connection_lost(self, error: Exception | None) -> None:
        self.sessions.discard(self)
        if self._refused:
            return  # aiosmtpd never saw this connection
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(error)  # type: ignore[misc]  # the aiosmtpd class after us in the MRO

    async def smtp_DATA(self, arg: str) -> None:
        self._data_rcpts = 0
        # A message line may be as long as the message (a malformed bounce is no reason for a 5xx).
        self.line_length_limit = self._reader._limit = self.data_line_limit
        try:
            await super().smtp_DATA(arg)  # type: ignore[misc]  # aiosmtpd, after us in the MRO
        finally:
            self._data_rcpts = 0
            self.line_length_limit = self._reader._limit = COMMAND_LINE_LIMIT

    async def push(self, status: str | bytes) -> None:
        if self._closing:
            return  # answers to commands the client sent after our 421: it reads nothing more
        if isinstance(status, str) and status.startswith("421"):
            self._close_after(status)
            return
        if isinstance(status, str) and status.startswith("500 Command line too long"):
            logger.cut("command-line", "command line over %d octets, refused", COMMAND_LINE_LIMIT)
            _LIMITED["command-line"].inc()
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
    return metrics.listen_address(listen)


# Settings the running listener cannot take over on SIGHUP: its sockets, its pool, its store connection.
RESTART_ONLY = (
    "state_dir", "redis", "lmtp.listen", "lmtp.smtp_listen", "lmtp.socket_mode", "lmtp.workers",
    "lmtp.metrics_listen", "lmtp.max_message_size", "lmtp.timeout", "lmtp.hostname", "lmtp.session_timeout",
    "lmtp.max_connections", "log.limited_burst", "log.limited_interval",
)  # fmt: skip


class Listener:
    """The LMTP server (and the optional SMTP one) on one event loop."""

    def __init__(self, service: Service, settings: config.Settings) -> None:
        self.settings = settings
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.lmtp.workers, thread_name_prefix="bk-lmtp"
        )
        self.handler = Handler(service, settings, self.pool)
        # aiosmtpd logs two INFO lines per command ("mail.log"): a client would write our log at its pace.
        log.limit_library("mail.log", debug=settings.log.level == "DEBUG")
        self.servers: list[asyncio.Server] = []
        self.sessions: set[Any] = set()
        self.unix_path: str | None = None
        self.addresses: list[tuple[str, int] | str] = []

    def _factory(self, base: type[Any]) -> Callable[[], Any]:
        lmtp = self.settings.lmtp
        hostname = lmtp.hostname or socket.gethostname()
        # aiosmtpd's default line limit (1001 octets) answers 500 to a message with a longer line: a
        # malformed bounce is no reason for a 5xx. The size limit bounds the memory instead (in DATA
        # only: see _Protocol).
        cls = type(
            base.__name__,
            (base,),
            {
                "line_length_limit": COMMAND_LINE_LIMIT,
                "data_line_limit": lmtp.max_message_size,
                "session_timeout": lmtp.session_timeout,
                "max_connections": lmtp.max_connections,
                "sessions": self.sessions,
            },
        )

        def make() -> Any:
            protocol = cls(
                self.handler,
                data_size_limit=lmtp.max_message_size,
                enable_SMTPUTF8=True,
                hostname=hostname,
                ident="ready",  # aiosmtpd's default names itself and its version
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
            # Without systemd's RuntimeDirectory the default's folder (/run/bouncekeeper) may not exist.
            os.makedirs(os.path.dirname(where) or ".", exist_ok=True)
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
            host, port = metrics.listen_address(lmtp.smtp_listen)  # TCP only: the config refuses "unix:" here
            smtp = await loop.create_server(self._factory(_SmtpProtocol), host, port)
            self.servers.append(smtp)
            self.addresses.append(smtp.sockets[0].getsockname()[:2])
            logger.info("smtp listening on %s", lmtp.smtp_listen)

    def reload(self) -> None:
        """SIGHUP: the file read again; sockets, workers and the store stay (RESTART_ONLY). On an error the
        running configuration stays, and the listener goes on."""
        try:
            fresh, changed = config.reread(self.settings, RESTART_ONLY)
            self.handler.reconfigure(self.handler.service.reconfigured(fresh), fresh)
        except config.ConfigError as exc:
            logger.error("SIGHUP: configuration error, the running configuration stays: %s", exc)
            return
        for key in changed:
            logger.warning("SIGHUP: %s changed: it takes effect at the next restart", key)
        self.settings = fresh
        log.set_level(fresh.log.level)
        logger.info("SIGHUP: configuration and keys re-read from %s", fresh.source)

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
    """Run until SIGTERM or SIGINT, then shut down cleanly; SIGHUP re-reads the configuration and keys."""
    listener = Listener(service, settings)
    await listener.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, listener.reload)
    if ready is not None:
        await ready(listener)
    await stop.wait()
    await listener.stop()


def run(service: Service, settings: config.Settings) -> int:
    """`bouncekeeper lmtp`: the listener in the foreground."""
    asyncio.run(serve(service, settings))
    return 0
