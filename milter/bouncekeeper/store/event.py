"""One recorded event: what the per-address history and the global stream hold.

Launchpad's list ("message id, date, addresses, permanent or temporary, context, possibly the message")
plus what an operator needs to judge a decision: status, reason, diagnostic, remote MTA, source and the
client that delivered the bounce. Serialised as a compact JSON object (empty fields left out).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    # One failed recipient (core.model.BounceKind values).
    PERMANENT = "permanent"
    TEMPORARY = "temporary"
    UNKNOWN = "unknown"
    # Recorded, never scored.
    DELAYED = "delayed"
    AUTOREPLY = "autoreply"
    FEEDBACK = "feedback"
    DELIVERED = "delivered"
    UNRECOGNISED = "unrecognised"
    FORGED = "forged"
    LOOP = "loop"
    # State changes and alerts.
    DISABLED = "disabled"  # by bounces (the threshold), by an admin or by the user
    THRESHOLD = "threshold"  # observe mode: the threshold was reached, the address was left active
    ENABLED = "enabled"
    RESET = "reset"
    BREAKER = "breaker"  # a domain's circuit breaker opened


class Source(StrEnum):
    """Where an event came from."""

    MILTER = "milter"
    LMTP = "lmtp"
    IMAP = "imap"
    SMTP_TIME = "smtp-time"
    CLI = "cli"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class Event:
    at: float  # epoch seconds
    kind: EventKind
    source: Source
    address: str | None = None
    id: str = ""  # the dedup id: sha256 of the bounce's identity, shortened
    message_id: str | None = None  # the bounced (original) message's Message-ID
    status: str | None = None
    reason: str | None = None
    diagnostic: str = ""
    remote_mta: str | None = None
    context: str = ""  # the VERP context tag
    client: str | None = None  # the address of the client that delivered the bounce
    queue_id: str | None = None
    effect: str | None = None  # hard | soft | none, as assessed before the counters
    note: str = ""

    def as_dict(self, *, date: bool = True) -> dict[str, Any]:
        """The non-empty fields, with `date` (ISO 8601 UTC) for people beside `at`."""
        out: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if value is None or value == "":
                continue
            out[name] = value.value if isinstance(value, StrEnum) else value
        if date:
            out["date"] = iso(self.at)
        return out

    def to_json(self, *, date: bool = True) -> str:
        return json.dumps(self.as_dict(date=date), ensure_ascii=False, separators=(",", ":"))


# Looked up once: dataclasses.fields() per event is a measurable part of recording one (benchmarks/).
_FIELD_NAMES = tuple(f.name for f in fields(Event))


def iso(epoch: float) -> str:
    return (
        datetime.datetime.fromtimestamp(epoch, datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )
