"""The milter's end-of-message steps that change a message: a loop held back, an outbound sender rewritten.

Each is a function of what the adapter (daemons/milter_adapter.py) collected during the transaction; it
asks the MTA for changes through the connection (pymilter's setreply, addheader, chgheader, chgfrom) and
returns the answer when the message is deferred or refused.

**Loops**: a message to a protected address that looks automatic (core/loops.py) is recorded, then dropped,
refused or tagged (`[milter] loop_action`); never refused where the refusal would be a bounce from our own
queue, or where other recipients share the message.

**Outbound**: one recipient gets its own signed VERP address (core/verp.py); several, or one that no VERP
address can carry (too long, or characters it cannot hold), get a token address whose recipients the store
keeps (`Service.register_token`). Enforce mode asks the MTA for the changes (the context header removed,
the suppressed recipients named in a header, the sender changed); observe mode changes nothing and logs
what enforce would do. Outbound mail never waits for the store: without it the message leaves with its
own sender.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import Milter

from bouncekeeper import log
from bouncekeeper.core import loops
from bouncekeeper.core.routing import MilterRouting
from bouncekeeper.core.verp import VerpUnencodable
from bouncekeeper.daemons import metrics
from bouncekeeper.daemons import milter_replies as replies
from bouncekeeper.service.bounces import Arrival, Service
from bouncekeeper.store import StoreUnavailable
from bouncekeeper.store.event import Source
from bouncekeeper.verpkeys import Signer

logger = log.get_logger("bouncekeeper.milterd")  # the milter's lines, under the name log filters use
LOOP_HEADER = "X-Bouncekeeper-Loop"
SUPPRESSED_HEADER = "X-Bouncekeeper-Suppressed"
# What a loop action did, as the log line says it.
_LOOP_DONE = {"discard": "dropped", "reject": "refused", "tag": "tagged"}
_DECIDED = metrics.decisions(Source.MILTER.value)
# pymilter's answers the steps give (pymilter is untyped).
_TEMPFAIL: int = Milter.TEMPFAIL
_REJECT: int = Milter.REJECT


class Editor(Protocol):
    """The answers and changes the steps ask for: pymilter's, on the connection (BounceMilter)."""

    def setreply(self, rcode: str, xcode: str | None = None, msg: str | None = None) -> Any: ...

    def chgheader(self, field: str, idx: int, value: str) -> Any: ...

    def addheader(self, field: str, value: str, idx: int = -1) -> Any: ...

    def chgfrom(self, sender: str, params: str | None = None) -> Any: ...


def raw_headers(headers: Sequence[tuple[str, str]]) -> bytes:
    """The header as the MTA sent it to the milter, one field a line."""
    lines = [f"{name}: {value}\r\n" for name, value in headers]
    return "".join(lines).encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Protected:
    """What the loop step reads of a message to protected addresses."""

    recipients: tuple[tuple[str, str], ...]  # (as sent, normalised)
    headers: tuple[tuple[str, str], ...]
    raw_sender: str  # "" for the null sender
    client_addr: str | None
    queue_id: str | None
    internal: bool  # Postfix's non-SMTP path: never deferred
    # A refusal reaches the sender (the smtpd path before any queue) and hits no other recipient's copy.
    refusable: bool


def hold_loop(
    editor: Editor, message: Protected, routing: MilterRouting, service: Service, removed: list[str]
) -> int | None:
    """A message to protected addresses: None when it is no loop, or when its copies to them are in
    `removed` (dropped), or tagged; else the answer (TEMPFAIL: the store is down; REJECT)."""
    signals = loops.header_signals(message.headers, envelope_sender=message.raw_sender)
    if not loops.is_loop(signals):
        return None
    _DECIDED["loop"].inc()
    raw = raw_headers(message.headers)
    for _rcpt, address in message.recipients:
        try:
            with metrics.timed("record_loop"):
                arrival = Arrival(
                    raw,
                    Source.MILTER,
                    envelope_rcpt=address,
                    client_addr=message.client_addr,
                    queue_id=message.queue_id,
                )
                service.record_loop(arrival, signals=signals)
        except StoreUnavailable as exc:
            if not message.internal and routing.enforce:
                # The decision is kept by deferring: the sender retries and we record it then.
                logger.warning("store unavailable, loop message deferred with 451 4.3.0: %s", exc)
                editor.setreply(*replies.TEMPFAIL)
                return _TEMPFAIL
            logger.warning("store unavailable, loop event not recorded (logged only): %s", exc)
    action = routing.loop_action
    rcpts = ",".join(a for _r, a in message.recipients)
    if not routing.enforce:
        logger.info(
            "loop would be %s (observe: passed on) rcpt=%s signals=%s",
            _LOOP_DONE[action],
            rcpts,
            ",".join(signals),
        )
        return None
    if action == "reject" and not message.refusable:
        # Never refuse Postfix's own or already queued mail (that refusal would be a bounce from our
        # queue), never refuse other recipients' copy.
        action = "discard"
    logger.info("loop %s rcpt=%s signals=%s", _LOOP_DONE[action], rcpts, ",".join(signals))
    if action == "reject":
        editor.setreply(*replies.LOOP_REFUSED)
        return _REJECT
    if action == "tag":
        editor.addheader(LOOP_HEADER, " ".join(signals))
        return None
    removed.extend(r for r, _a in message.recipients)
    return None


@dataclass(frozen=True, slots=True)
class Outbound:
    """What the step reads of one outbound message."""

    sender: str  # normalised
    recipients: tuple[str, ...]  # normalised, in RCPT order
    verp: bool  # the sender asked for VERP ([verp] senders) and the milter may rewrite it
    context_values: tuple[str, ...] = ()  # of the context header, every copy
    suppressed: tuple[str, ...] = ()  # recipients suppression let through (observe)
    message_id: str | None = None

    @property
    def context(self) -> str:
        # VERP addresses are compared in lower case (MTAs lower-case local parts): so is the context.
        return self.context_values[0].lower() if self.context_values else ""


def rewrite_sender(
    editor: Editor, message: Outbound, routing: MilterRouting, signer: Signer | None, service: Service
) -> None:
    """Outbound mail: the changes in enforce mode, the log line of what enforce would do in observe."""
    if not routing.enforce:
        _observe(message, signer)
        return
    # Remove every copy of the context header: it is for us, not for the recipient. chgheader with
    # an empty value deletes; indexes are 1-based per header name, so delete from the last.
    for index in range(len(message.context_values), 0, -1):
        editor.chgheader(routing.context_header, index, "")
    if message.suppressed:
        editor.addheader(SUPPRESSED_HEADER, ", ".join(message.suppressed))
    if not message.verp or signer is None:
        return
    try:
        new_sender = _single(signer, message)
    except VerpUnencodable as exc:
        # Too long (VerpTooLong) or characters a VERP address cannot carry: the token names it.
        logger.debug("per-recipient VERP impossible, token mode: %s", exc)
        new_sender = None
    mode = "single" if new_sender is not None else "token"
    if new_sender is None:
        try:
            with metrics.timed("register_token"):
                token = service.register_token(
                    message.recipients,
                    message_id=message.message_id,
                    sender=message.sender,
                    context=message.context,
                )
        except StoreUnavailable as exc:
            _DECIDED["verp-skipped"].inc()
            # Never block outbound mail because of VERP: it leaves with its own sender.
            logger.warning(
                "store unavailable, sender left unchanged for %d recipients: %s", len(message.recipients), exc
            )
            return
        new_sender = signer.address_for_token(token)
    editor.chgfrom(f"<{new_sender}>")
    _DECIDED["verp-rewrite"].inc()
    logger.info(
        "verp sender=%s new=%s rcpts=%d mode=%s context=%s",
        message.sender,
        new_sender,
        len(message.recipients),
        mode,
        message.context or "-",
    )


def _single(signer: Signer, message: Outbound) -> str | None:
    """The signed address of the one recipient; None when there are several. Raises VerpUnencodable."""
    if len(message.recipients) != 1:
        return None
    return signer.address_for(message.recipients[0], message.context)


def _observe(message: Outbound, signer: Signer | None) -> None:
    """Observe mode: log the sender enforce would give; the message leaves exactly as it came."""
    if message.suppressed:
        logger.info("would mark suppressed recipients: %s", ", ".join(message.suppressed))
    if not message.verp or signer is None:
        return
    new_sender = "-"  # a token address: enforce registers the token in Redis first
    with contextlib.suppress(VerpUnencodable):
        new_sender = _single(signer, message) or "-"
    logger.info(
        "verp would rewrite sender=%s new=%s rcpts=%d mode=%s context=%s (observe: unchanged)",
        message.sender,
        new_sender,
        len(message.recipients),
        "single" if new_sender != "-" else "token",
        message.context or "-",
    )
