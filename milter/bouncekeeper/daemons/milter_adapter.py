"""The pymilter protocol adapter: signed VERP out, bounces and loops caught in.

One `BounceMilter` per SMTP connection (libmilter calls the factory that daemons/milterd.py installs). It
only translates between the milter protocol and the core and service: the decisions (where the message
belongs: core/routing.py; the RCPT verdict on a bounce address: core/rcpt.py; loop signals:
core/loops.py; classification and counters: the service) are made there. What each kind of message gets:

- **outbound** (client in `[milter] originating_networks`, SASL-authenticated, or Postfix's `{daemon_name}`
  in `originating_daemons`/`internal_daemons`): the envelope sender becomes the signed VERP address of the
  recipient (`chgfrom` at end of message); the context header is removed; suppression at RCPT.
- **bounce**: a recipient in `[verp] bounce_domain` whose signature verifies at RCPT; at end of message the
  whole message goes to `Service.process_bounce`, then it is discarded (or accepted, `bounce_action`).
- **loop**: a message to one of `protected_recipients` that looks automatic (`core/loops.is_loop`: null
  sender, multipart/report, Precedence, Auto-Submitted other than "no", an autoresponder header, List-Id)
  is dropped and recorded, never answered.
- everything else is accepted at its first RCPT when that recipient is in no watched domain
  (`accept_early`), otherwise at DATA, the first callback that knows every recipient (MAIL FROM is a
  no-reply step, so it cannot accept): ordinary traffic never streams its header or body to us.

Safety rules (never lose mail): every callback is guarded; an internal error or an unreachable store is
`451 4.3.0` for that message only, with one log line carrying the queue id. In Postfix's non-SMTP path
(`non_smtpd_milters`: sendmail(1) submissions and Postfix's own bounces with
`internal_mail_filter_classes = bounce`) the milter never rejects nor tempfails: MILTER_README says a
non-SMTP milter that rejects or tempfails a simulated RCPT is a configuration error and that rejecting an
internal bounce loses mail. There it accepts and logs instead. Redis being down is never an internal
error for ordinary mail: only bounces and loop messages wait for the store (451); VERP and suppression
go without it.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import Milter

from bouncekeeper import log
from bouncekeeper.core import addresses, throttle
from bouncekeeper.core.rcpt import Answer, RcptVerdict, bounce_rcpt
from bouncekeeper.core.routing import MilterRouting
from bouncekeeper.daemons import metrics, milter_eom
from bouncekeeper.daemons import milter_replies as replies
from bouncekeeper.service.bounces import Arrival, Classified, Service
from bouncekeeper.store import StoreUnavailable
from bouncekeeper.store.event import Source
from bouncekeeper.verpkeys import Signer

logger = log.get_logger("bouncekeeper.milterd")  # the daemon's name, as before the split: log filters use it

# The actions this milter may ask for; negotiating fewer makes the MTA keep less state.
ACTIONS = Milter.CHGFROM | Milter.CHGHDRS | Milter.ADDHDRS | Milter.DELRCPT | Milter.SETSYMLIST
# Keep at most this much of a bounce body: DSNs are small; a bounce quoting a huge original is still
# classified from its first part (RFC 3464 section 2: the report comes before the returned message).
MAX_BOUNCE_BYTES = 2 * 1024 * 1024
# Bounce addresses per message: beyond, 452 4.5.3; beyond twice as many, 421 (the MTA disconnects). A
# bounce answers one envelope; a message to many bounce addresses is made up (docs/hostile.md).
MAX_BOUNCE_RCPTS = 100
_LIMITED = metrics.limited(Source.MILTER.value)
# bouncekeeper_decisions_total{source="milter"}: label values checked once, so that ordinary mail pays
# one uncontended lock and one dict update for its "accept" (metrics.BoundCounter).
_DECIDED = metrics.decisions(Source.MILTER.value)

# pymilter is untyped: its reply codes and decorators, typed once here.
CONTINUE: int = Milter.CONTINUE
ACCEPT: int = Milter.ACCEPT
REJECT: int = Milter.REJECT
TEMPFAIL: int = Milter.TEMPFAIL
DISCARD: int = Milter.DISCARD
SKIP: int = Milter.SKIP


@dataclass
class Runtime:
    """Everything a connection needs, shared by all connections (read-only after start-up)."""

    routing: MilterRouting
    # The real Service, as every adapter takes it; its store may be down (StoreUnavailable).
    service: Service
    signer: Signer | None
    # Forged bounce addresses per SMTP client, across its connections (the RCPT oracle, docs/hostile.md).
    forgery: throttle.ForgeryLimit = field(default_factory=throttle.ForgeryLimit)
    # Bounces of one SMTP client processed at a time (docs/hostile.md: eight sessions of one client).
    share: throttle.ClientShare = field(default_factory=throttle.ClientShare)


@dataclass
class _BounceRcpt:
    rcpt: str  # as the client sent it, for delrcpt
    address: str
    verdict: RcptVerdict  # decided at RCPT, from the one decode of the address: process_bounce records it


@dataclass
class _Message:
    """Per-transaction state, reset at MAIL FROM."""

    raw_sender: str = ""  # as sent, without brackets; "" for the null sender <>
    sender: str = ""  # normalised (outbound mail only; see envfrom)
    null_sender: bool = False
    outbound: bool = False
    verp: bool = False
    bounces: list[_BounceRcpt] = field(default_factory=list)
    bounce_rcpts: int = 0  # RCPTs to the bounce domain, duplicates included (MAX_BOUNCE_RCPTS)
    protected: list[tuple[str, str]] = field(default_factory=list)  # (rcpt as sent, normalised)
    ordinary: list[tuple[str, str]] = field(default_factory=list)  # outbound: kept for VERP and tokens
    others: int = 0  # inbound recipients that concern nobody here (counted, not parsed)
    suppressed_seen: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    context_values: list[str] = field(default_factory=list)
    message_id: str | None = None
    body: list[bytes] = field(default_factory=list)
    body_size: int = 0


F = TypeVar("F", bound=Callable[..., Any])
# @noreply: the MTA does not wait for this callback's answer (it must be CONTINUE).
_noreply: Callable[[F], F] = Milter.noreply
# @symlist: ask the MTA for exactly these macros at this stage (SMFIA_SETSYMLIST).
_symlist: Callable[..., Callable[[F], F]] = Milter.symlist


def _guard(answer: Callable[[BounceMilter, str, Exception], int]) -> Callable[[F], F]:
    """A callback that sets the queue id for logging and turns any exception into `answer`'s answer."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(self: BounceMilter, *args: Any) -> Any:
            log.queue_id.set(self.queue_id)
            try:
                return func(self, *args)
            except Exception as exc:  # noqa: BLE001 - the MTA must get an answer, never a crash
                return answer(self, func.__name__, exc)

        return wrapper  # type: ignore[return-value]

    return decorate


def _remember(milter: BounceMilter, stage: str, exc: Exception) -> int:
    """For @noreply callbacks, which must answer CONTINUE: the failure is reported at the next callback
    that can answer."""
    milter.broken = f"{stage}: {exc!r}"
    return CONTINUE


# One log line and a safe answer: 451 4.3.0, or the message passed on where it must never be refused.
_guarded = _guard(lambda milter, stage, exc: milter.internal_error(stage, exc))
_noreply_guarded = _guard(_remember)


def _answering(func: F) -> F:
    """For the callbacks the MTA waits for after MAIL FROM (RCPT, DATA, end of message): the queue id is
    known by then, and a failure a no-reply callback remembered gets its answer here."""

    @functools.wraps(func)
    def wrapper(self: BounceMilter, *args: Any) -> Any:
        self._update_queue_id()
        if self.broken:
            return self.internal_error(func.__name__, self.broken)
        return func(self, *args)

    return wrapper  # type: ignore[return-value]


_ANSWERS = {ACCEPT: "accept", DISCARD: "discard", TEMPFAIL: "tempfail", REJECT: "reject"}


def _decided(rc: int) -> int:
    """Count the milter's final answer to a message (bouncekeeper_decisions_total) and return it."""
    name = _ANSWERS.get(rc)
    if name is not None:
        _DECIDED[name].inc()
    return rc


def _strip_brackets(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        return value[1:-1]
    return value


class BounceMilter(Milter.Base):  # type: ignore[misc]  # pymilter is untyped
    """One SMTP connection."""

    runtime: Runtime  # set by `serve` (a class attribute: libmilter's factory takes no arguments)

    def __init__(self, runtime: Runtime | None = None) -> None:
        # The runtime of the moment the connection opened: a SIGHUP swaps the class's, and this connection
        # finishes on the settings and keys it started with.
        self.runtime = runtime if runtime is not None else BounceMilter.runtime
        self.queue_id = "-"
        self.client_addr: str | None = None
        self.daemon_name: str | None = None
        self.internal = False
        # The after-queue listener of the routed set-up (postfix/routed/): inbound mail this host has
        # already accepted. A refusal there would become a bounce from our own queue, so it never rejects.
        self.after_queue = False
        self.originating = False
        self.broken: str | None = None
        self.forged_rcpts = 0  # forged bounce addresses refused in this connection
        self.msg = _Message()

    # -- negotiation ---------------------------------------------------------------------------------

    def negotiate(self, opts: list[int]) -> Any:
        rc = super().negotiate(opts)
        if rc == CONTINUE:
            # Ask only for the actions we use (pymilter keeps every offered action by default).
            opts[0] = self._actions = opts[0] & ACTIONS
        return rc

    # -- connection ----------------------------------------------------------------------------------

    @_noreply
    @_noreply_guarded
    @_symlist("{daemon_name}")
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        simulated = False
        if family in (socket.AF_INET, socket.AF_INET6):
            # libmilter gives (ip, port[, flow, scope]); some harnesses give the bare ip.
            self.client_addr = str(hostaddr[0] if isinstance(hostaddr, tuple) else hostaddr)
            # Postfix's cleanup simulates "localhost[127.0.0.1]" for non-SMTP mail, with client port 0
            # (checked with Postfix 3.7): no real TCP client has port 0.
            simulated = isinstance(hostaddr, tuple) and len(hostaddr) > 1 and hostaddr[1] == 0
        self.daemon_name = self.getsymval("{daemon_name}")
        origin = self.runtime.routing.origin(self.client_addr, self.daemon_name, simulated=simulated)
        self.internal = origin.internal
        self.after_queue = origin.after_queue
        self.originating = origin.originating
        logger.debug(
            "connect client=%s daemon=%s internal=%s after_queue=%s originating=%s",
            self.client_addr,
            self.daemon_name,
            self.internal,
            self.after_queue,
            self.originating,
        )
        return CONTINUE

    # -- transaction ---------------------------------------------------------------------------------

    # No reply at MAIL FROM: the MTA does not wait for us. Nothing is refused at MAIL, and mail that is
    # none of our business is accepted at its first RCPT (accept_early) or at DATA: that saves one
    # round trip on every inbound message (benchmarks/postfix_throughput.py).
    @_noreply
    @_noreply_guarded
    @_symlist("{auth_authen}", "i")
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.msg = _Message()
        if self.broken and not self.broken.startswith("connect"):
            self.broken = None  # a failure of the previous message; a connect failure stays
        self._update_queue_id()
        routing = self.runtime.routing
        raw = _strip_brackets(mailfrom)
        self.msg.raw_sender = raw
        self.msg.null_sender = not raw
        authenticated = bool(self.getsymval("{auth_authen}"))
        self.msg.outbound = self.originating or authenticated
        if not self.msg.outbound:
            return CONTINUE  # inbound: the sender is parsed only if the message turns out to be a bounce
        sender = addresses.normalise(raw) if raw else None
        self.msg.sender = sender or ""
        self.msg.verp = (
            self.msg.outbound
            and self.runtime.signer is not None
            and sender is not None
            and not routing.is_bounce_address(sender)
            and routing.wants_verp(sender)
        )
        return CONTINUE

    @_guarded
    @_symlist("i")
    @_answering
    def envrcpt(self, to: str, *params: str) -> int:
        if not self.msg.outbound:
            rc = self._inbound_screen(to)
            if rc is not None:
                return rc
        address = addresses.normalise(_strip_brackets(to))
        return CONTINUE if address is None else self._sort_rcpt(to, address)

    @_guarded
    @_symlist("i")
    @_answering
    def data(self) -> int:
        msg = self.msg
        if not (msg.bounces or msg.protected or (msg.outbound and (msg.verp or msg.suppressed_seen))):
            _DECIDED["accept"].inc()
            return ACCEPT
        if msg.null_sender and len(msg.bounces) > 1:
            # A real DSN answers one envelope: a null-sender message to several VERP addresses is made up.
            logger.warning(
                "suspicious: null-sender message to %d bounce addresses: %s",
                len(msg.bounces),
                ",".join(b.address for b in msg.bounces),
            )
        return CONTINUE

    @_noreply
    @_noreply_guarded
    def header(self, name: str, value: str) -> int:
        msg = self.msg
        msg.headers.append((name, value))
        lname = name.lower()
        if lname == self.runtime.routing.context_header.lower():
            msg.context_values.append(value.strip())
        elif lname == "message-id" and msg.message_id is None:
            msg.message_id = value.strip()
        return CONTINUE

    @_guarded
    def body(self, chunk: bytes) -> int:
        msg = self.msg
        if not msg.bounces:
            # Loops and outbound mail are decided from the header: skip the rest of the body.
            return SKIP if self._protocol & Milter.P_SKIP else CONTINUE
        if msg.body_size < MAX_BOUNCE_BYTES:
            msg.body.append(chunk[: MAX_BOUNCE_BYTES - msg.body_size])
            msg.body_size += len(msg.body[-1])
        return CONTINUE

    @_guarded
    @_symlist("i")
    @_answering
    def eom(self) -> int:
        msg = self.msg
        removed: list[str] = []  # recipients (as sent) that this message must not be delivered to
        if msg.bounces:
            rc = self._eom_bounce(removed)
            if rc is not None:
                return _decided(rc)
        if msg.protected:
            rc = self._eom_loop(removed)
            if rc is not None:
                return _decided(rc)
        if msg.outbound and msg.ordinary:
            self._eom_outbound()
        total = len(msg.bounces) + len(msg.protected) + len(msg.ordinary) + msg.others
        if removed and len(removed) >= total:
            return _decided(DISCARD)
        for rcpt in removed:
            self.delrcpt(rcpt)
        return _decided(ACCEPT)

    def abort(self) -> int:
        self.msg = _Message()
        return CONTINUE

    def close(self) -> int:
        return CONTINUE

    # -- end-of-message steps ------------------------------------------------------------------------

    def _eom_bounce(self, removed: list[str]) -> int | None:
        msg, routing, service = self.msg, self.runtime.routing, self.runtime.service
        raw = milter_eom.raw_headers(msg.headers) + b"\r\n" + b"".join(msg.body)
        sender = addresses.normalise(msg.raw_sender) if msg.raw_sender else None
        # Classified once for all its bounce recipients, not once per recipient (docs/hostile.md).
        classified = service.triage(raw, envelope_sender=sender)
        # One client's bounces take their turn; mail our own Postfix passes on (internal, after the
        # queue) is everyone's, and goes at once.
        fair = self.client_addr and self._may_refuse()
        try:
            with self.runtime.share.slot(self.client_addr or "") if fair else contextlib.nullcontext():
                self._record_bounces(raw, classified, sender)
        except StoreUnavailable as exc:
            self._count_caps(classified)
            if not routing.enforce:
                # Observe changes nothing in the mail flow: the bounce goes on to where it went before.
                logger.warning("store unavailable, bounce passed on unrecorded (observe): %s", exc)
                return ACCEPT
            if self.internal:
                # Never tempfail Postfix's own bounce: let it go on to the bounce domain, whose smtpd
                # milter answers 451 until the store is back (postfix/README.md).
                logger.warning("store unavailable, internal bounce passed on undecided: %s", exc)
                return ACCEPT
            logger.warning("store unavailable, bounce deferred with 451 4.3.0: %s", exc)
            self.setreply(*replies.STORE_DOWN)
            return TEMPFAIL
        self._count_caps(classified)
        if routing.bounce_action == "discard" and routing.enforce:
            removed.extend(b.rcpt for b in msg.bounces)
        return None

    @staticmethod
    def _count_caps(classified: Classified) -> None:
        """Once per message: a classification cut at its work caps (the service logged which)."""
        if classified.limits:
            _LIMITED["classification"].inc()

    def _record_bounces(self, raw: bytes, classified: Classified, sender: str | None) -> None:
        """The message for each of its bounce addresses, from its one classification. Raises
        StoreUnavailable."""
        msg, routing, service = self.msg, self.runtime.routing, self.runtime.service
        for bounce in msg.bounces:
            with metrics.timed("process_bounce"):
                outcome = service.process_bounce(
                    Arrival(
                        raw,
                        envelope_rcpt=bounce.address,
                        envelope_sender=sender,
                        source=Source.MILTER,
                        client_addr=self.client_addr,
                        queue_id=self.queue_id if self.queue_id != "-" else None,
                        classified=classified,
                        verdict=bounce.verdict,
                    )
                )
            metrics.observe(Source.MILTER.value, outcome)
            if routing.enforce:
                logger.info("%s action=%s", outcome.summary(), routing.bounce_action)
            else:
                logger.info("%s action=accept would=%s", outcome.summary(), routing.bounce_action)

    def _eom_loop(self, removed: list[str]) -> int | None:
        msg = self.msg
        protected = milter_eom.Protected(
            recipients=tuple(msg.protected),
            headers=tuple(msg.headers),
            raw_sender=msg.raw_sender,
            client_addr=self.client_addr,
            queue_id=self.queue_id if self.queue_id != "-" else None,
            internal=self.internal,
            refusable=self._may_refuse() and not (msg.ordinary or msg.others or msg.bounces),
        )
        return milter_eom.hold_loop(self, protected, self.runtime.routing, self.runtime.service, removed)

    def _eom_outbound(self) -> None:
        msg, runtime = self.msg, self.runtime
        outbound = milter_eom.Outbound(
            sender=msg.sender,
            recipients=tuple(a for _r, a in msg.ordinary),
            verp=msg.verp,
            context_values=tuple(msg.context_values),
            suppressed=tuple(msg.suppressed_seen),
            message_id=msg.message_id,
        )
        milter_eom.rewrite_sender(self, outbound, runtime.routing, runtime.signer, runtime.service)

    # -- helpers -------------------------------------------------------------------------------------

    def _inbound_screen(self, to: str) -> int | None:
        """The answer to an inbound RCPT that concerns nobody here or that nobody can have; None to go on."""
        if not self.runtime.routing.concerns(to):
            # The common case of an MX: ordinary inbound mail.
            return self._unwatched_rcpt()
        if addresses.unsafe(to):
            if not self._may_refuse():
                return CONTINUE  # never refused after the queue; normalise gives such an address nothing
            metrics.bad_address(logger, _LIMITED, _DECIDED, to)
            self.setreply(*replies.BAD_ADDRESS)
            return REJECT
        return None

    def _unwatched_rcpt(self) -> int:
        msg = self.msg
        if self.runtime.routing.accept_early and not (msg.bounces or msg.protected or msg.ordinary):
            # Its first recipient is in no watched domain: step aside now. After ACCEPT here Postfix
            # sends this milter nothing more for the message, does not hand it to cleanup (smtpd's
            # milter_send runs after the first RCPT event and skips accepted milters) and does not
            # wait for a DATA reply; that halves the milter's cost per message
            # (benchmarks/postfix_throughput.py). Config: [milter] accept_early says what is given up.
            _DECIDED["accept"].inc()
            return ACCEPT
        msg.others += 1
        return CONTINUE

    def _sort_rcpt(self, to: str, address: str) -> int:
        """File a recipient with the message's bounce, protected or ordinary ones; or the refusal."""
        routing, msg = self.runtime.routing, self.msg
        if routing.is_bounce_address(address):
            rc = self._bounce_rcpt(to, address)
            if rc is not None:
                return rc
            # not_verp: postmaster@ or another ordinary address of the bounce domain.
        if address in routing.protected_recipients:
            msg.protected.append((to, address))
            return CONTINUE
        rc = self._outbound_rcpt(address) if msg.outbound else None
        if rc is None:
            msg.ordinary.append((to, address))
        return CONTINUE if rc is None else rc

    def _outbound_rcpt(self, address: str) -> int | None:
        """Suppression and split mode for one outbound recipient: a refusal, or None to take it."""
        routing, msg = self.runtime.routing, self.msg
        if routing.suppression != "off" and self._suppressed(address):
            _DECIDED["suppressed"].inc()
            if routing.suppression == "enforce" and routing.enforce and not self.internal:
                logger.info("recipient suppressed rcpt=%s action=reject", address)
                _DECIDED["reject"].inc()
                self.setreply(*replies.suppressed(address))
                return REJECT
            logger.info("recipient suppressed rcpt=%s action=observe", address)
            msg.suppressed_seen.append(address)
        split = msg.verp and routing.multi_recipient == "split" and msg.ordinary and not self.internal
        if split and routing.enforce:
            # chgfrom changes the sender of the whole transaction: one recipient per transaction
            # (RFC 5321 section 4.5.3.1.10: a client must handle 452 by sending the rest later).
            _DECIDED["split"].inc()
            self.setreply(*replies.ONE_PER_MESSAGE)
            return TEMPFAIL
        return None

    def _bounce_rcpt(self, to: str, address: str) -> int | None:
        """RCPT to the bounce domain: the answer, or None for an address of it that is not VERP."""
        routing, msg = self.runtime.routing, self.msg
        may_refuse = self._may_refuse()
        guarded = routing.enforce and may_refuse and self.client_addr is not None
        if guarded and self.runtime.forgery.blocked(self.client_addr or "", time.monotonic()):
            # Valid or not, the same answer: while blocked, RCPT tells nothing about a guess.
            logger.cut("forged-client", "client %s over the forged-address limit, 421", self.client_addr)
            _LIMITED["forged-client"].inc()
            self.setreply(*replies.FORGED_CLOSE)  # Postfix disconnects on a 421
            return TEMPFAIL
        msg.bounce_rcpts += 1
        if msg.bounce_rcpts > MAX_BOUNCE_RCPTS and may_refuse:
            # A bounce answers one envelope: this many bounce addresses in one message are made up.
            _LIMITED["recipients"].inc()
            if msg.bounce_rcpts > 2 * MAX_BOUNCE_RCPTS:
                logger.cut(
                    "recipients-close",
                    "client %s sent %d bounce addresses, 421",
                    self.client_addr,
                    msg.bounce_rcpts,
                )
                self.setreply(*replies.TOO_MANY_CLOSE)
            else:
                self.setreply(*replies.TOO_MANY)
            return TEMPFAIL
        verdict = bounce_rcpt(
            self.runtime.service.check_rcpt(address),
            enforce=routing.enforce,
            may_refuse=may_refuse,
            guarded=guarded,
        )
        if verdict.answer is Answer.NOT_VERP:
            return None
        if verdict.answer is Answer.REFUSE:
            logger.info("bounce refused rcpt=%s verp=%s action=reject", address, verdict.status)
            _DECIDED["reject"].inc()
            if verdict.guess and self._guessing():
                self.setreply(*replies.FORGED_CLOSE)
                return TEMPFAIL
            self.setreply(*verdict.refusal())
            return REJECT
        if verdict.forged:
            # Observe mode: the one INFO line comes at end of message, when it is recorded as forged.
            logger.debug("bounce address %s rcpt=%s mode=observe", verdict.status, address)
        if not any(b.address == address for b in msg.bounces):  # a duplicate RCPT: once
            msg.bounces.append(_BounceRcpt(to, address, verdict))
        return CONTINUE

    def _guessing(self) -> bool:
        """Count a forged bounce address; whether the connection is to be closed for it (core/throttle)."""
        self.forged_rcpts += 1
        blocked = self.runtime.forgery.forged(self.client_addr or "", time.monotonic())
        if blocked or self.forged_rcpts >= throttle.PER_SESSION:
            logger.cut(
                "forged-close",
                "client %s sent %d forged bounce addresses, 421",
                self.client_addr,
                self.forged_rcpts,
            )
            _LIMITED["forged-client" if blocked else "forged-session"].inc()
            return True
        return False

    def _may_refuse(self) -> bool:
        """Whether a 5xx reaches the client that sent the mail (the smtpd path before any queue)."""
        return not (self.internal or self.after_queue)

    def _suppressed(self, address: str) -> bool:
        try:
            with metrics.timed("is_suppressed"):
                return self.runtime.service.is_suppressed(address)
        except StoreUnavailable as exc:
            # Suppression is an optimisation for the sender: never block mail because Redis is down.
            logger.warning("store unavailable, suppression not checked rcpt=%s: %s", address, exc)
            return False

    def _update_queue_id(self) -> None:
        value = self.getsymval("i")
        if value:
            self.queue_id = value
            log.queue_id.set(value)

    def internal_error(self, stage: str, problem: object) -> int:
        if self.internal or not self.runtime.routing.enforce:
            # Postfix's non-SMTP path must never be refused; observe mode changes nothing in the flow.
            logger.error("internal error in %s, message passed on unchanged: %r", stage, problem)
            return _decided(ACCEPT) if stage != "envrcpt" else CONTINUE
        logger.error("internal error in %s, answering 451 4.3.0: %r", stage, problem)
        _DECIDED["tempfail"].inc()
        logger.debug("traceback", exc_info=isinstance(problem, BaseException))
        try:
            self.setreply(*replies.TEMPFAIL)
        except Exception:  # no context (tests) or reply refused: TEMPFAIL alone is enough
            logger.debug("setreply failed", exc_info=True)
        return TEMPFAIL
