"""One recorded event: what the global stream holds in full, and the per-address history in short.

Launchpad's list ("message id, date, addresses, permanent or temporary, context, possibly the message")
plus what an operator needs to judge a decision: status, reason, diagnostic, remote MTA, source and the
client that delivered the bounce. The global stream `bk:events` holds each event whole, as a compact JSON
object (empty fields left out). The per-address history (the `track` key, store/keys.py) holds one short
tab-separated line per event (`to_history`): only what explains the address's state (time, kind, source,
status, reason, context, effect, note), the stream entry's ID (`ref`) and the decision; the Message-ID,
diagnostic, remote MTA, client, sender and queue id are read back from the stream entry by `ref` when an
operator looks (Store.view), so an idle tracked address stays under 300 bytes
(docs/redis.md, "Store throughput and memory").
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
        """The history line's event part: HISTORY_FIELDS' values, tab-separated (the Lua step appends
        the stream entry's ID and its decision: LINE_FIELDS)."""
        values = []
        for name in HISTORY_FIELDS:
            value = getattr(self, name)
            if name == "at":
                # Whole seconds (as `date` shows them): the joined stream entry has the exact value, and
                # three more characters would put the benchmark's one-event value in a bigger allocation.
                text = str(int(value))
            elif value is None:
                text = ""
            elif isinstance(value, StrEnum):
                text = value.value
            else:
                text = str(value)[:HISTORY_TEXT_MAX]
            values.append(text.translate(_FLAT))
        return "\t".join(values)


# A history line's fields, in order: the event's own (to_history), then what the Lua step appends: `ref`,
# the stream entry's ID, and the decision (record.lua: scored, state, score, soft; admin.lua: state
# and previous). Stored lines are read back by position: append only.
HISTORY_FIELDS = ("at", "kind", "source", "status", "reason", "context", "effect", "note")
DECISION_FIELDS = ("scored", "state", "score", "soft", "previous")
LINE_FIELDS = (*HISTORY_FIELDS, "ref", *DECISION_FIELDS)
# Context tags and notes are short; a long one is cut in the history (the stream keeps it whole).
HISTORY_TEXT_MAX = 80
# Tabs separate fields and newlines separate lines: inside a value they become spaces.
_FLAT = str.maketrans("\t\n\r", "   ")


@dataclass(frozen=True, slots=True)
class Track:
    """The `track` key's value: the daily rule's hard score and the day of its last rise (0 and None
    when no score is live), then the history lines, newest first."""

    score: int = 0
    day: int | None = None
    lines: str = ""


def parse_track(value: str | None) -> Track:
    """A `track` value: line 1 is "score<TAB>day" ("0<TAB>" with no live score), then history lines."""
    if not value:
        return Track()
    head, _, lines = value.partition("\n")
    score, _, day = head.partition("\t")
    return Track(int(score or 0), int(day) if day else None, lines)


def parse_history(lines: str | None, address: str) -> list[dict[str, Any]]:
    """History lines (newest first) as event dicts with the field names of `as_dict`, plus `ref` and the
    decision (`scored`, `state`, `score`, `soft`, `previous`); `address` and `date` put back."""
    return [_parse_line(line, LINE_FIELDS, address) for line in (lines or "").split("\n") if line]


# The history of builds before the `track` key: a string key of its own (`:history`), every field of
# the event in the line. Still read (Store.view) until those keys expire (history_days).
LEGACY_FIELDS = (
    "at", "kind", "source", "id", "message_id", "status", "reason", "diagnostic", "remote_mta",
    "context", "sender", "client", "queue_id", "effect", "note",
    "scored", "state", "score", "soft", "previous",
)  # fmt: skip


def parse_legacy_history(value: str | None, address: str) -> list[dict[str, Any]]:
    return [_parse_line(line, LEGACY_FIELDS, address) for line in (value or "").split("\n") if line]


def _parse_line(line: str, names: tuple[str, ...], address: str) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for name, text in zip(names, line.split("\t"), strict=False):
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
    return entry


# Looked up once: dataclasses.fields() per event is a measurable part of recording one (benchmarks/).
_FIELD_NAMES = tuple(f.name for f in fields(Event))


def iso(epoch: float) -> str:
    return (
        datetime.datetime.fromtimestamp(epoch, datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )
