"""The pymilter adapter: signed VERP out, bounces and loops caught in.

One `BounceMilter` per SMTP connection (libmilter calls the factory). It only translates between the
milter protocol and the service layer: the decisions (VERP signature, classification, counters) live in
`core` and `service`. What the milter itself decides is where the message belongs:

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

The routed Postfix set-up (postfix/routed/) runs the same milter behind the queue: the daemon also serves a
policy service (`policyd`) that Postfix asks about the bounce domain and protected recipients only, and
the after-queue listener's daemon name (`after_queue_daemons`) makes that mail inbound and never refused.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import grp
import importlib
import ipaddress
import logging
import os
import pathlib
import pwd
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import Milter

from bouncekeeper import config, log, verpkeys
from bouncekeeper.core import addresses, loops, throttle
from bouncekeeper.core.rcpt import Answer, RcptVerdict, bounce_rcpt
from bouncekeeper.core.routing import MilterRouting, watched_domains
from bouncekeeper.core.verp import VerpUnencodable
from bouncekeeper.daemons import metrics, policyd
from bouncekeeper.service.bounces import Arrival, Classified, Service
from bouncekeeper.store import StoreUnavailable
from bouncekeeper.store.event import Source
from bouncekeeper.verpkeys import Signer

logger = log.get_logger("bouncekeeper.milterd")  # as before the folders: log filters use it
# pymilter's C extension `milter`. Imported by name: mypy would take our source root (the folder
# milter/, never a package) for it, and the extension ships no types anyway.
libmilter: Any = importlib.import_module("milter")

# The actions this milter may ask for; negotiating fewer makes the MTA keep less state.
ACTIONS = Milter.CHGFROM | Milter.CHGHDRS | Milter.ADDHDRS | Milter.DELRCPT | Milter.SETSYMLIST
# Keep at most this much of a bounce body: DSNs are small; a bounce quoting a huge original is still
# classified from its first part (RFC 3464 section 2: the report comes before the returned message).
MAX_BOUNCE_BYTES = 2 * 1024 * 1024
# Bounce addresses per message: beyond, 452 4.5.3; beyond twice as many, 421 (the MTA disconnects). A
# bounce answers one envelope; a message to many bounce addresses is made up (docs/hostile.md).
MAX_BOUNCE_RCPTS = 100
LOOP_HEADER = "X-Bouncekeeper-Loop"
# What a loop action did, as the log line says it.
_LOOP_DONE = {"discard": "dropped", "reject": "refused", "tag": "tagged"}
SUPPRESSED_HEADER = "X-Bouncekeeper-Suppressed"
_TEMPFAIL_TEXT = "Temporary local problem, please try again later"
_FORGED_CLOSE_TEXT = "Too many invalid bounce addresses, closing connection"
_LIMITED = metrics.limited(Source.MILTER.value)
# bouncekeeper_decisions_total{source="milter"}: label values checked once, so that ordinary mail pays
# one uncontended lock and one dict update for its "accept" (metrics.BoundCounter).
_DECIDED = metrics.decisions(Source.MILTER.value)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# pymilter is untyped: its reply codes and decorators, typed once here.
CONTINUE: int = Milter.CONTINUE
ACCEPT: int = Milter.ACCEPT
REJECT: int = Milter.REJECT
TEMPFAIL: int = Milter.TEMPFAIL
DISCARD: int = Milter.DISCARD
SKIP: int = Milter.SKIP


def routing_from_settings(settings: config.Settings) -> MilterRouting:
    """The milter's routing settings, parsed once at start-up; a ConfigError names file and key."""
    m, v = settings.milter, settings.verp
    networks = []
    for index, text in enumerate(m.originating_networks):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise config.ConfigError(
                settings.source, f"milter.originating_networks[{index}]", str(exc)
            ) from exc
    protected = set()
    for index, text in enumerate(m.protected_recipients):
        address = addresses.normalise(text)
        if address is None:
            raise config.ConfigError(
                settings.source, f"milter.protected_recipients[{index}]", f"not an address: {text!r}"
            )
        protected.add(address)
    return MilterRouting(
        bounce_domain=v.bounce_domain,
        local_prefix=v.local_prefix,
        senders=tuple(p.lower() for p in v.senders),
        multi_recipient=v.multi_recipient,
        context_header=v.context_header,
        originating_networks=tuple(networks),
        originating_daemons=frozenset(m.originating_daemons),
        internal_daemons=frozenset(m.internal_daemons),
        after_queue_daemons=frozenset(m.after_queue_daemons),
        protected_recipients=frozenset(protected),
        loop_action=m.loop_action,
        suppression=m.suppression,
        bounce_action=m.bounce_action,
        accept_early=m.accept_early,
        enforce=settings.policy.mode == "enforce",
        watched_domains=watched_domains(v.bounce_domain, protected),
    )


def check_settings(settings: config.Settings) -> tuple[MilterRouting, Signer | None]:
    """Everything the daemon would refuse at start-up, as a ConfigError naming file and key."""
    return routing_from_settings(settings), verpkeys.load_signer(settings)


def startup_lines(routing: MilterRouting, *, verp_on: bool) -> list[str]:
    """What the operator must read at start-up: which senders are rewritten, and the mode."""
    if not verp_on:
        verp_line = "VERP off: [verp] bounce_domain is empty, no sender is rewritten"
    elif not routing.senders:
        verp_line = "VERP off for outbound mail: [verp] senders lists no sender, no sender is rewritten"
    else:
        verp_line = "VERP for the senders matching " + ", ".join(routing.senders)
    if routing.enforce:
        mode_line = "mode=enforce: senders rewritten, bounces and loops dropped after they are recorded"
    else:
        mode_line = (
            "mode=observe: the mail flow is left unchanged; what enforce would do is recorded and"
            ' logged as "would ..." ([policy] mode = "enforce" acts on it)'
        )
    return [verp_line, mode_line]


def _log_startup(runtime: Runtime) -> None:
    for line in startup_lines(runtime.routing, verp_on=runtime.signer is not None):
        logger.info("%s", line)


@dataclass
class Runtime:
    """Everything a connection needs, shared by all connections (read-only after start-up)."""

    routing: MilterRouting
    # The real Service, as every adapter takes it (tests subclass it for faults); its store may be down.
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


def _guarded(func: F) -> F:
    """Set the queue id for logging; turn any exception into one log line and a safe answer."""

    @functools.wraps(func)
    def wrapper(self: BounceMilter, *args: Any) -> Any:
        log.queue_id.set(self.queue_id)
        try:
            return func(self, *args)
        except Exception as exc:  # noqa: BLE001 - the MTA must get an answer, never a crash
            return self.internal_error(func.__name__, exc)

    return wrapper  # type: ignore[return-value]


def _noreply_guarded(func: F) -> F:
    """For @noreply callbacks, which must answer CONTINUE: remember the failure for a later callback."""

    @functools.wraps(func)
    def wrapper(self: BounceMilter, *args: Any) -> Any:
        log.queue_id.set(self.queue_id)
        try:
            return func(self, *args)
        except Exception as exc:  # noqa: BLE001 - reported at the next callback that can answer
            self.broken = f"{func.__name__}: {exc!r}"
            return CONTINUE

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
    def envrcpt(self, to: str, *params: str) -> int:
        self._update_queue_id()
        if self.broken:
            return self.internal_error("envrcpt", self.broken)
        if not self.msg.outbound:
            rc = self._inbound_screen(to)
            if rc is not None:
                return rc
        address = addresses.normalise(_strip_brackets(to))
        return CONTINUE if address is None else self._sort_rcpt(to, address)

    @_guarded
    @_symlist("i")
    def data(self) -> int:
        self._update_queue_id()
        if self.broken:
            return self.internal_error("data", self.broken)
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
    def eom(self) -> int:
        self._update_queue_id()
        if self.broken:
            return self.internal_error("eom", self.broken)
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

    def _raw_headers(self) -> bytes:
        lines = [f"{name}: {value}\r\n" for name, value in self.msg.headers]
        return "".join(lines).encode("utf-8", "surrogateescape")

    def _eom_bounce(self, removed: list[str]) -> int | None:
        msg, routing, service = self.msg, self.runtime.routing, self.runtime.service
        raw = self._raw_headers() + b"\r\n" + b"".join(msg.body)
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
            self.setreply("451", "4.3.0", "Bounce store unavailable, please try again later")
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
        msg, routing = self.msg, self.runtime.routing
        signals = loops.header_signals(msg.headers, envelope_sender=msg.raw_sender)
        if not loops.is_loop(signals):
            return None
        _DECIDED["loop"].inc()
        raw_headers = self._raw_headers()
        for _rcpt, address in msg.protected:
            try:
                with metrics.timed("record_loop"):
                    arrival = Arrival(
                        raw_headers,
                        Source.MILTER,
                        envelope_rcpt=address,
                        client_addr=self.client_addr,
                        queue_id=self.queue_id if self.queue_id != "-" else None,
                    )
                    self.runtime.service.record_loop(arrival, signals=signals)
            except StoreUnavailable as exc:
                if not self.internal and routing.enforce:
                    # The decision is kept by deferring: the sender retries and we record it then.
                    logger.warning("store unavailable, loop message deferred with 451 4.3.0: %s", exc)
                    self.setreply("451", "4.3.0", _TEMPFAIL_TEXT)
                    return TEMPFAIL
                logger.warning("store unavailable, loop event not recorded (logged only): %s", exc)
        action = routing.loop_action
        if not routing.enforce:
            logger.info(
                "loop would be %s (observe: passed on) rcpt=%s signals=%s",
                _LOOP_DONE[action],
                ",".join(a for _r, a in msg.protected),
                ",".join(signals),
            )
            return None
        if action == "reject" and (not self._may_refuse() or msg.ordinary or msg.others or msg.bounces):
            # Never refuse Postfix's own or already queued mail (that refusal would be a bounce from our
            # queue), never refuse other recipients' copy.
            action = "discard"
        logger.info(
            "loop %s rcpt=%s signals=%s",
            _LOOP_DONE[action],
            ",".join(a for _r, a in msg.protected),
            ",".join(signals),
        )
        if action == "reject":
            self.setreply("550", "5.7.1", "Automatic message to an address that does not accept them")
            return REJECT
        if action == "tag":
            self.addheader(LOOP_HEADER, " ".join(signals))
            return None
        removed.extend(r for r, _a in msg.protected)
        return None

    def _eom_outbound(self) -> None:
        msg, routing = self.msg, self.runtime.routing
        if not routing.enforce:
            self._observe_outbound()
            return
        # Remove every copy of the context header: it is for us, not for the recipient. chgheader with
        # an empty value deletes; indexes are 1-based per header name, so delete from the last.
        for index in range(len(msg.context_values), 0, -1):
            self.chgheader(routing.context_header, index, "")
        if msg.suppressed_seen:
            self.addheader(SUPPRESSED_HEADER, ", ".join(msg.suppressed_seen))
        if not msg.verp or self.runtime.signer is None:
            return
        # VERP addresses are compared in lower case (MTAs lower-case local parts): so is the context.
        context = msg.context_values[0].lower() if msg.context_values else ""
        recipients = [a for _r, a in msg.ordinary]
        new_sender: str | None = None
        mode = "single"
        if len(recipients) == 1:
            try:
                new_sender = self.runtime.signer.address_for(recipients[0], context)
            except VerpUnencodable as exc:
                # Too long (VerpTooLong) or characters a VERP address cannot carry: the token names it.
                logger.debug("per-recipient VERP impossible, token mode: %s", exc)
                mode = "token"
        else:
            mode = "token"
        if new_sender is None:
            try:
                with metrics.timed("register_token"):
                    token = self.runtime.service.register_token(
                        recipients, message_id=msg.message_id, sender=msg.sender, context=context
                    )
            except StoreUnavailable as exc:
                _DECIDED["verp-skipped"].inc()
                # Never block outbound mail because of VERP: it leaves with its own sender.
                logger.warning(
                    "store unavailable, sender left unchanged for %d recipients: %s", len(recipients), exc
                )
                return
            new_sender = self.runtime.signer.address_for_token(token)
        self.chgfrom(f"<{new_sender}>")
        _DECIDED["verp-rewrite"].inc()
        logger.info(
            "verp sender=%s new=%s rcpts=%d mode=%s context=%s",
            msg.sender,
            new_sender,
            len(recipients),
            mode,
            context or "-",
        )

    def _observe_outbound(self) -> None:
        """Observe mode: log the sender enforce would give; the message leaves exactly as it came."""
        msg, signer = self.msg, self.runtime.signer
        if msg.suppressed_seen:
            logger.info("would mark suppressed recipients: %s", ", ".join(msg.suppressed_seen))
        if not msg.verp or signer is None:
            return
        context = msg.context_values[0].lower() if msg.context_values else ""
        recipients = [a for _r, a in msg.ordinary]
        new_sender = "-"  # a token address: enforce registers the token in Redis first
        if len(recipients) == 1:
            with contextlib.suppress(VerpUnencodable):
                new_sender = signer.address_for(recipients[0], context)
        logger.info(
            "verp would rewrite sender=%s new=%s rcpts=%d mode=%s context=%s (observe: unchanged)",
            msg.sender,
            new_sender,
            len(recipients),
            "single" if new_sender != "-" else "token",
            context or "-",
        )

    # -- helpers -------------------------------------------------------------------------------------

    def _inbound_screen(self, to: str) -> int | None:
        """The answer to an inbound RCPT that concerns nobody here or that nobody can have; None to go on."""
        if not self.runtime.routing.concerns(to):
            # The common case of an MX: ordinary inbound mail.
            return self._unwatched_rcpt()
        if addresses.unsafe(to):
            if not self._may_refuse():
                return CONTINUE  # never refused after the queue; normalise gives such an address nothing
            logger.info("refused rcpt=%r: control, bidi or undecodable characters", to)
            _LIMITED["bad-address"].inc()
            _DECIDED["reject"].inc()
            self.setreply("550", "5.1.3", "Bad recipient address syntax")
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
                self.setreply(
                    "550", "5.1.1", f"<{address}>: recipient disabled after repeated bounces (bouncekeeper)"
                )
                return REJECT
            logger.info("recipient suppressed rcpt=%s action=observe", address)
            msg.suppressed_seen.append(address)
        split = msg.verp and routing.multi_recipient == "split" and msg.ordinary and not self.internal
        if split and routing.enforce:
            # chgfrom changes the sender of the whole transaction: one recipient per transaction
            # (RFC 5321 section 4.5.3.1.10: a client must handle 452 by sending the rest later).
            _DECIDED["split"].inc()
            self.setreply("452", "4.5.3", "Too many recipients: one recipient per message, please")
            return TEMPFAIL
        return None

    def _bounce_rcpt(self, to: str, address: str) -> int | None:
        """RCPT to the bounce domain: the answer, or None for an address of it that is not VERP."""
        routing, msg = self.runtime.routing, self.msg
        may_refuse = self._may_refuse()
        guarded = routing.enforce and may_refuse and self.client_addr is not None
        if guarded and self.runtime.forgery.blocked(self.client_addr or "", time.monotonic()):
            # Valid or not, the same answer: while blocked, RCPT tells nothing about a guess.
            logger.warning("client %s over the forged-address limit, 421", self.client_addr)
            _LIMITED["forged-client"].inc()
            self.setreply("421", "4.7.0", _FORGED_CLOSE_TEXT)  # Postfix disconnects on a 421
            return TEMPFAIL
        msg.bounce_rcpts += 1
        if msg.bounce_rcpts > MAX_BOUNCE_RCPTS and may_refuse:
            # A bounce answers one envelope: this many bounce addresses in one message are made up.
            _LIMITED["recipients"].inc()
            if msg.bounce_rcpts > 2 * MAX_BOUNCE_RCPTS:
                logger.warning("client %s sent %d bounce addresses, 421", self.client_addr, msg.bounce_rcpts)
                self.setreply("421", "4.5.3", "Too many recipients, closing connection")
            else:
                self.setreply("452", "4.5.3", "Too many recipients")
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
                self.setreply("421", "4.7.0", _FORGED_CLOSE_TEXT)
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
            logger.warning(
                "client %s sent %d forged bounce addresses, 421", self.client_addr, self.forged_rcpts
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
            self.setreply("451", "4.3.0", _TEMPFAIL_TEXT)
        except Exception:  # no context (tests) or reply refused: TEMPFAIL alone is enough
            logger.debug("setreply failed", exc_info=True)
        return TEMPFAIL


# -- the daemon --------------------------------------------------------------------------------------


def socket_spec(settings: config.Settings) -> str:
    """The socket in libmilter syntax; a relative unix path is made absolute (for the MTA's config)."""
    spec = settings.milter.socket or f"unix:{settings.state_dir}/milter.sock"
    path = socket_path(spec)
    return f"unix:{path.absolute()}" if path is not None else spec


def socket_path(spec: str) -> pathlib.Path | None:
    for prefix in ("unix:", "local:"):
        if spec.startswith(prefix):
            return pathlib.Path(spec[len(prefix) :])
    if spec.startswith("/"):
        return pathlib.Path(spec)
    return None


def recipient_routing(settings: config.Settings) -> policyd.RecipientRouting:
    routing = routing_from_settings(settings)
    return policyd.RecipientRouting(
        bounce_domain=routing.bounce_domain,
        protected_recipients=routing.protected_recipients,
        enforce=routing.enforce,
        filter=settings.milter.policy_filter,
    )


def _register(timeout: int) -> None:
    """pymilter's runmilter, minus opensocket/main so that privileges can be dropped in between."""
    libmilter.set_connect_callback(Milter.connect_callback)
    libmilter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    libmilter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    libmilter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    libmilter.set_close_callback(Milter.close_callback)
    libmilter.set_flags(ACTIONS)
    if timeout:
        libmilter.settimeout(timeout)
    libmilter.register(
        "bouncekeeper",
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )


def _stop_on_signals() -> None:
    """Make SIGTERM and SIGINT stop libmilter cleanly, and SIGHUP reload, whichever thread the kernel picks.

    libmilter sigwait()s for them in its own thread but blocks them only in the thread that calls main();
    other threads (the embedded Redis supervisor) leave them unblocked, and a signal delivered there would
    kill the process by default action. Blocking them everywhere instead would be inherited by the
    redis-server child, which would then never see its own SIGTERM. So: a handler that does nothing but
    wake a thread through Python's wakeup fd, and that thread asks libmilter to stop (smfi_stop).
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda _signum, _frame: None)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def stopper() -> None:
        while (signum := os.read(read_end, 1)) == bytes([signal.SIGHUP]):
            _reload()
        logger.info("signal %s received, stopping", signum[0] if signum else "?")
        _stop_requested.set()
        libmilter.stop()

    threading.Thread(target=stopper, name="milter-stop", daemon=True).start()


_stop_requested = threading.Event()
# What SIGHUP runs, once the runtime exists (serve sets it).
_reloader: Callable[[], None] | None = None

# Settings a running daemon cannot take over on SIGHUP: its sockets, its user, its store connection.
RESTART_ONLY = (
    "state_dir", "redis", "milter.socket", "milter.socket_mode", "milter.user", "milter.pid_file",
    "milter.metrics_listen", "milter.policy_socket",
)  # fmt: skip


def _reload() -> None:
    """SIGHUP: re-read the configuration and the keys; on any error keep running on the current ones."""
    if _reloader is None:
        logger.warning("SIGHUP before the milter was ready: ignored")
        return
    try:
        _reloader()
    except config.ConfigError as exc:
        logger.error("SIGHUP: configuration error, the running configuration stays: %s", exc)
    except Exception as exc:  # noqa: BLE001 - a failed reload must never stop a running milter
        logger.error("SIGHUP: reload failed, the running configuration stays: %r", exc)


def reread(current: config.Settings) -> config.Settings:
    """The settings file read again, with the RESTART_ONLY keys kept as running (a warning says so)."""
    fresh, changed = config.reread(current, RESTART_ONLY)
    for key in changed:
        logger.warning("SIGHUP: %s changed: it takes effect at the next restart", key)
    return fresh


def reconfigured(runtime: Runtime, settings: config.Settings) -> Runtime:
    """A new runtime on the same store: routing, VERP signer and service built from `settings`."""
    routing, signer = check_settings(settings)
    return Runtime(routing, runtime.service.reconfigured(settings), signer)


def _install_reloader(settings: config.Settings, policy_server: policyd.PolicyServer | None) -> None:
    """Let SIGHUP swap in a runtime built from the file as it is now (key rotation without a restart)."""
    global _reloader  # noqa: PLW0603 - the signal thread's one entry point, set once the runtime exists
    running = [settings]

    def reload() -> None:
        fresh = reread(running[0])
        runtime = reconfigured(BounceMilter.runtime, fresh)
        logging.getLogger().setLevel(fresh.log.level)
        # One assignment each: a new connection sees either the old runtime or the new one, never a mix.
        BounceMilter.runtime = runtime
        if policy_server is not None:
            policy_server.routing = recipient_routing(fresh)
            policy_server.check_rcpt = runtime.service.check_rcpt
        running[0] = fresh
        keys = runtime.signer.keyring.key_ids if runtime.signer is not None else ()
        logger.info("SIGHUP: configuration and keys re-read from %s (key ids %s)", fresh.source, keys)
        _log_startup(runtime)

    _reloader = reload


def serve(settings: config.Settings, make_runtime: Callable[[], tuple[Runtime, Callable[[], None]]]) -> int:
    """Open the socket, drop privileges, build the runtime, run until SIGTERM; clean up."""
    spec = socket_spec(settings)
    mode = int(settings.milter.socket_mode)
    path = socket_path(spec)
    user = pwd.getpwnam(settings.milter.user) if settings.milter.user else None
    state_dir = pathlib.Path(settings.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    pid_file = pathlib.Path(settings.milter.pid_file or state_dir / "milter.pid")

    _stop_on_signals()  # first: a SIGTERM during start-up must still stop cleanly
    _register(timeout=0)
    # The policy service is bound before the milter socket (and so before the privilege drop): once the
    # milter socket exists, both listen, and requests wait in the backlog until the runtime is built.
    policy_server = (
        policyd.PolicyServer(
            settings.milter.policy_socket,
            recipient_routing(settings),
            mode=mode,
            limits=policyd.ConnectionLimits.from_settings(settings),
        )
        if settings.milter.policy_socket
        else None
    )
    libmilter.setconn(spec)
    old_umask = os.umask(0o777 & ~mode)
    try:
        libmilter.opensocket(True)  # True: remove a stale socket left by a crash
    except BaseException:
        if policy_server is not None:
            policy_server.stop()
        raise
    finally:
        os.umask(old_umask)
    shutdown: Callable[[], None] | None = None
    try:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")
        if path is not None:
            os.chmod(path, mode)
        if user is not None:
            sockets = [p for p in (path, policy_server.path if policy_server else None) if p is not None]
            for owned in [state_dir, pid_file, *sockets]:
                os.chown(owned, user.pw_uid, user.pw_gid)
            os.setgroups([g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        # The MTA's connections wait in the listen backlog until main() accepts them.
        runtime, shutdown = make_runtime()
        BounceMilter.runtime = runtime
        Milter.factory = BounceMilter
        if policy_server is not None:
            policy_server.start(runtime.service.check_rcpt)
        _install_reloader(settings, policy_server)
        # Everything built so far (classifier tables, the store, modules) lives until exit: keep it out
        # of the cyclic collector's scans, which every connection's few objects would otherwise trigger.
        gc.freeze()
        _log_startup(runtime)
        logger.info("listening on %s (pid %d)", spec, os.getpid())
        try:
            libmilter.main()  # returns after smfi_stop (SIGTERM, SIGINT: see _stop_on_signals)
        except libmilter.error:
            if not _stop_requested.is_set():
                raise
            # Stopped before main() ran: libmilter refuses to start, which is what was asked.
    finally:
        logger.info("stopping")
        if policy_server is not None:
            policy_server.stop()
        if shutdown is not None:
            shutdown()
        for leftover in (pid_file, path):
            try:
                if leftover is not None:
                    leftover.unlink(missing_ok=True)
            except OSError as exc:
                # After dropping privileges, a folder the user may not write (keep the socket and the
                # pid file in one it owns, e.g. systemd's RuntimeDirectory); a stale socket is replaced
                # at the next start anyway.
                logger.warning("cannot remove %s: %s", leftover, exc.strerror)
    return 0
