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

Every text field is cut to `FIELD_MAX` octets when the event is made, and control and bidi characters
become `?` (a bounce is written by a stranger, and these fields reach logs, terminals and webhooks): a
stream entry is at most `ENTRY_MAX_BYTES`, whatever the bounce held (docs/security.md).
"""

from __future__ import annotations

import datetime
import json
import re
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
    # The recipients a bounce named without evidence for them (no authentic VERP address, or not among a
    # token's recipients): one entry per message, listing them (`recipients`), never scored.
    UNVOUCHED = "unvouched"
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
    # An `unvouched` event's recipients: "address:kind:status", space-separated, cut at FIELD_MAX.
    recipients: str = ""

    def __post_init__(self) -> None:
        for name, limit in _BOUNDED:
            value = getattr(self, name)
            if value and (len(value) > limit // 4 or not value.isprintable()):
                object.__setattr__(self, name, bound(value, limit))

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


# The most octets (UTF-8) each text field of an event keeps. A DNS name is at most 253 octets, an address
# 254 (RFC 5321 section 4.5.3.1.3), a status 9 ("5.XXX.YYY"); a Message-ID has no limit of its own but
# RFC 5322's 998-octet line, and real ones stay under 100. An event made with longer values keeps their
# start; the raw bounce (raw_days) keeps the rest.
FIELD_MAX = {
    "address": 254,
    "id": 32,
    "message_id": 256,
    "status": 16,
    "reason": 32,
    "diagnostic": 500,
    "remote_mta": 256,
    "context": 64,
    "sender": 254,
    "client": 64,
    "queue_id": 64,
    "effect": 8,
    "note": 256,
    "recipients": 1024,
}
_BOUNDED = tuple(FIELD_MAX.items())
# A stream entry's JSON at most: every field at its limit, each octet a `"` or `\` that JSON doubles,
# plus the names, `at`, `kind`, `source` and `date` (tests/store/test_store.py builds that worst event).
ENTRY_MAX_BYTES = 2 * sum(FIELD_MAX.values()) + 256
# C0 and C1 controls, DEL and the bidi overrides and isolates (U+202A-202E, U+2066-2069): a stranger's text
# must not move a terminal's cursor or reorder what an operator reads. Tabs and newlines are kept here
# (a diagnostic may have lines); the history line flattens them.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def bound(text: str, limit: int) -> str:
    """`text` without control or bidi characters, cut to at most `limit` UTF-8 octets (never in the
    middle of a character)."""
    text = _CONTROL.sub("?", text)
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


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
