"""Frozen value types shared by the core and the adapters.

Enum values are stable strings: they are written to Redis, to logs and to JSON, and operators grep them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class BounceKind(StrEnum):
    """Whether a failure says the *address* is dead.

    PERMANENT only when the address itself is dead (unknown user, unknown host, moved, not accepting mail
    with a 5xx). A 5.x.x rejection for spam, policy, size or a full mailbox is TEMPORARY: it says nothing
    about the address, and counting it would disable a good one (the labelled corpus reads kind so).
    """

    PERMANENT = "permanent"
    TEMPORARY = "temporary"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    """The reason vocabulary shared by the major bounce classifiers (Sisimai's names)."""

    USERUNKNOWN = "userunknown"
    HOSTUNKNOWN = "hostunknown"
    HASMOVED = "hasmoved"
    MAILBOXFULL = "mailboxfull"
    FILTERED = "filtered"
    BLOCKED = "blocked"
    SPAMDETECTED = "spamdetected"
    POLICYVIOLATION = "policyviolation"
    REJECTED = "rejected"
    EXPIRED = "expired"
    NETWORKERROR = "networkerror"
    SYSTEMERROR = "systemerror"
    MESGTOOBIG = "mesgtoobig"
    TOOMANYCONN = "toomanyconn"
    SUSPEND = "suspend"
    NORELAYING = "norelaying"
    SECURITYERROR = "securityerror"
    VIRUSDETECTED = "virusdetected"
    AUTHFAILURE = "authfailure"
    NOTACCEPT = "notaccept"
    EXCEEDLIMIT = "exceedlimit"
    CONTENTERROR = "contenterror"
    MAILERERROR = "mailererror"
    SYNTAXERROR = "syntaxerror"
    SYSTEMFULL = "systemfull"
    ONHOLD = "onhold"
    UNDEFINED = "undefined"
    # Not failures: kept in the same vocabulary so events have one reason field.
    VACATION = "vacation"
    FEEDBACK = "feedback"
    DELIVERED = "delivered"
    DELAYED = "delayed"


# Reasons that say the address is dead. Anything else is at most TEMPORARY, whatever the status class.
ADDRESS_REASONS: frozenset[Reason] = frozenset(
    {Reason.USERUNKNOWN, Reason.HOSTUNKNOWN, Reason.HASMOVED, Reason.NOTACCEPT}
)


class MessageType(StrEnum):
    """What a message is, as a whole."""

    BOUNCE = "bounce"  # at least one recipient failed
    DELAY = "delay"  # a warning: delivery delayed, the MTA keeps trying; not a failure
    AUTOREPLY = "autoreply"  # RFC 3834 auto-reply, vacation, or a VERP'd reply that is no DSN
    FEEDBACK = "feedback"  # RFC 5965 ARF feedback report (abuse complaint)
    DELIVERED = "delivered"  # success DSN (Action: delivered / relayed / expanded)
    UNRECOGNISED = "unrecognised"  # none of the above could say


class Stage(StrEnum):
    """Which triage stage found a failure (Mailman 3's order: core/classify.py)."""

    VERP = "verp"
    DSN = "dsn"
    FLUFL = "flufl"
    RULES = "rules"
    # A delivery-status report that lists no recipient at all (Postfix's "Delivery report unavailable"):
    # the one To/Cc address of the message it returns, kind UNKNOWN.
    RETURNED = "returned"


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed recipient of one bounce (a Delay, for one only delayed)."""

    recipient: str  # normalised by core.addresses.normalise
    kind: BounceKind
    reason: Reason = Reason.UNDEFINED
    dsn_class: BounceKind = BounceKind.UNKNOWN  # the class of the status code itself (5 -> permanent)
    status: str | None = None  # RFC 3463 x.y.z
    reply_code: int | None = None  # SMTP basic reply code, e.g. 550
    diagnostic: str = ""
    remote_mta: str | None = None
    stage: Stage = Stage.DSN
    action: str | None = None  # RFC 3464 Action: failed | delayed | ...
    # The SMTP command the remote server's reply answered ("RCPT", "DATA", "MAIL"): a refusal at RCPT
    # is about the address, one after DATA about the message. Set when the failure's own text names
    # it, or when the kind depended on it and the rest of the report names it; else None.
    smtp_command: str | None = None


class Delay(Failure):
    """One recipient whose delivery is only delayed (Action: delayed, "will keep trying"): a warning that
    the MTA keeps trying, never scored.

    It is read from a report as a failure is, so it carries a Failure's fields as the report gave them
    (action "delayed"); the event stream and `classify --jsonl` write both alike. What must tell a delay
    from a failure reads the type (or Classification.delays), never a field. No fields of its own, so
    Failure's dataclass methods serve it (equality and repr by its own class, still frozen)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Classification:
    """The classifier's verdict on one message. Built only by core.classify."""

    message_type: MessageType
    failures: tuple[Failure, ...] = ()
    # Recipients that were only delayed (Action: delayed, "will keep trying"): warnings, never scored.
    delays: tuple[Delay, ...] = ()
    # Why the message looks like part of a loop: "null-sender", "multipart-report", "precedence:bulk",
    # "auto-submitted:auto-replied" ... Empty for a message that raises no suspicion.
    loop_signals: tuple[str, ...] = ()
    original_message_id: str | None = None
    # The recipient the VERP envelope address decoded to, when the caller supplied one.
    verp_recipient: str | None = None
    # Stages that failed on this input and were skipped ("flufl: IndexError ..."): never fatal.
    errors: tuple[str, ...] = field(default=())
    # The work caps this message reached (core.limits names: "bytes", "recipients" ...): the
    # verdict is right for the part read, and says nothing of what lay beyond. Empty for nearly all mail.
    limits: tuple[str, ...] = ()

    @property
    def is_bounce(self) -> bool:
        return bool(self.failures)

    @property
    def is_loop_candidate(self) -> bool:
        return bool(self.loop_signals)
