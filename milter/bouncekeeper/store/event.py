"""One recorded event: what the per-address history and the global stream hold.

Launchpad's list ("message id, date, addresses, permanent or temporary, context, possibly the message")
plus what an operator needs to judge a decision: status, reason, diagnostic, remote MTA, source and the
client that delivered the bounce. Serialised as a compact JSON object (empty fields left out) for the
global stream, and as a positional, tab-separated line for the per-address history (`to_history`): no
key names, no address (the key carries it), no date (`at` has it), the diagnostic cut at
HISTORY_DIAGNOSTIC_MAX characters (the stream keeps it whole). That line is most of what an idle tracked
address costs in Redis (README, "Store throughput and memory").
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
    sender: str | None = None  # the original mail's envelope sender (picks the notify target)
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

    def to_history(self) -> str:
        """The history line: HISTORY_FIELDS' values, tab-separated (the Lua step appends its decision)."""
        values = []
        for name in HISTORY_FIELDS:
            value = getattr(self, name)
            if name == "at":
                text = repr(value)
            elif value is None:
                text = ""
            elif isinstance(value, StrEnum):
                text = value.value
            else:
                text = str(value)
                if name == "diagnostic":
                    text = text[:HISTORY_DIAGNOSTIC_MAX]
            values.append(text.translate(_FLAT))
        return "\t".join(values)


# A history line's fields, in order: the event's, then the decision the Lua step appends
# (record.lua: scored, state, score, soft; admin.lua: state and previous). Append only: stored lines
# are read back by position.
HISTORY_FIELDS = (
    "at", "kind", "source", "id", "message_id", "status", "reason", "diagnostic", "remote_mta",
    "context", "sender", "client", "queue_id", "effect", "note",
)  # fmt: skip
DECISION_FIELDS = ("scored", "state", "score", "soft", "previous")
HISTORY_DIAGNOSTIC_MAX = 160
# Tabs separate fields and newlines separate lines: inside a value they become spaces.
_FLAT = str.maketrans("\t\n\r", "   ")


def parse_history(value: str | None, address: str) -> list[dict[str, Any]]:
    """A history value (lines newest first) as event dicts with the field names of `as_dict`, plus
    the decision (`scored`, `state`, `score`, `soft`, `previous`); `address` and `date` put back."""
    out: list[dict[str, Any]] = []
    for line in (value or "").split("\n"):
        if not line:
            continue
        parts = line.split("\t")
        entry: dict[str, Any] = {}
        for name, text in zip(HISTORY_FIELDS + DECISION_FIELDS, parts, strict=False):
            if text == "":
                continue
            if name == "at":
                entry["at"] = float(text)
            elif name == "scored":
                entry["scored"] = text == "1"
            elif name in ("score", "soft"):
                entry[name] = int(text)
            else:
                entry[name] = text
        entry["address"] = address
        if "at" in entry:
            entry["date"] = iso(entry["at"])
        out.append(entry)
    return out


# Looked up once: dataclasses.fields() per event is a measurable part of recording one (benchmarks/).
_FIELD_NAMES = tuple(f.name for f in fields(Event))


def iso(epoch: float) -> str:
    return (
        datetime.datetime.fromtimestamp(epoch, datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )
