"""RFC 3464 / RFC 6533 delivery-status reader.

A DSN is a multipart/report (RFC 6522) whose machine-readable part is `message/delivery-status`
(RFC 3464 section 2) or, for internationalised mail, `message/global-delivery-status` (RFC 6533
section 6). That part is a series of header-like field blocks separated by blank lines: the first block
is per message (Reporting-MTA, Arrival-Date ...), each following block is per recipient
(Final-Recipient, Action, Status, Diagnostic-Code, Remote-MTA ...).

Real MTAs bend the rules: the per-message block is missing, blocks are not separated, fields are
indented, the part is labelled text/plain. This reader is lenient: it reads every block and keeps the
ones that name a recipient. It never raises on malformed text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bouncekeeper.core.memo import bounded

DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
HEADERS_TYPES = frozenset(
    {"text/rfc822-headers", "message/rfc822-headers", "text/global-headers", "message/global-headers"}
)
MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
# Work caps (docs/classify-cost.md): a delivery-status part is read to MAX_CHARS characters (a report on 1,000
# recipients is ~300 KB; what follows is not read, and DeliveryStatus.cut says so), and each field value
# up to MAX_FIELD_CHARS (the longest real Diagnostic-Code is a multi-line reply of a few hundred).
MAX_CHARS = 1024 * 1024
MAX_FIELD_CHARS = 8 * 1024

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
# RFC 3463 section 2: class "." subject "." detail; class is 2, 4 or 5.
# The look-behind after the first digit, not before it: a pattern that starts with a character class
# is searched by skipping to that class, one that starts with a look-behind tries every position (6x
# slower on a report; tests/core/test_classify_limits.py checks both forms find the same).
STATUS_RE = re.compile(r"([245])(?<![\d.][245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_MESSAGE_ID = re.compile(r"message-id[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE)
_MESSAGE_ID_NAME = re.compile(r"message-id[ \t]*:", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One per-recipient block of a delivery-status part, fields as written (not yet normalised)."""

    final_recipient: str | None
    original_recipient: str | None
    action: str | None  # lower-cased: failed | delayed | delivered | relayed | expanded
    status: str | None  # the x.y.z of the Status field, None when absent or unreadable
    diagnostic: str  # Diagnostic-Code without its type ("smtp;"), unfolded
    diagnostic_type: str | None
    remote_mta: str | None
    # Text beside the code in the Status field: "5.0.0 (recipient reached disk quota)" or a bare
    # "553 Exceeded maximum inbound message size" from MTAs that put an SMTP reply there.
    status_comment: str = ""

    @property
    def recipient(self) -> str | None:
        return self.final_recipient or self.original_recipient


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    reporting_mta: str | None
    recipients: tuple[RecipientReport, ...]
    cut: bool = False  # the part was longer than MAX_CHARS: its recipients past that are not listed


def field_blocks(text: str) -> list[dict[str, str]]:
    """Split RFC 822-style field blocks: blank line separates blocks; folded lines are unfolded.

    Field names are lower-cased; a repeated field keeps its first value (RFC 3464 allows each once).
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        stripped = line.strip()  # once: each line is tested blank, then read as a field or a fold
        if not stripped:
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        match = _FIELD.match(stripped)
        # Some MTAs indent every field: an indented "Name: value" of a DSN field name is a field, any
        # other indented line continues the last field.
        if line[0] in " \t" and last is not None and not (match and match.group(1).lower() in _KNOWN_FIELDS):
            if len(current[last]) < MAX_FIELD_CHARS:
                # Past MAX_FIELD_CHARS a folded value's lines are dropped: joining each to a growing
                # value copies it again, quadratic in the number of lines.
                current[last] = f"{current[last]} {stripped}"
            continue
        if match is None:
            last = None
            continue
        name = match.group(1).lower()
        if name == "final-recipient" and name in current:
            # Two recipients with no blank line between them (seen from some appliances).
            blocks.append(current)
            current = {}
        current.setdefault(name, match.group(2).strip())
        last = name
    if current:
        blocks.append(current)
    return blocks


_KNOWN_FIELDS = frozenset(
    {
        "reporting-mta",
        "original-envelope-id",
        "arrival-date",
        "received-from-mta",
        "dsn-gateway",
        "x-postfix-queue-id",
        "x-postfix-sender",
        "original-recipient",
        "final-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "will-retry-until",
        "final-log-id",
        "x-actual-recipient",
        "x-supplementary-info",
        "x-display-name",
    }
)


# Compiled once (re.fullmatch(str, ...) looks its pattern up at every call): read for every DSN field
# that carries a type, and for every Message-ID.
_TYPE = re.compile(r"\s*[A-Za-z][A-Za-z0-9-]*\s*")
_BLANK_RUN = re.compile(r"\s+")
_ANGLE_ID = re.compile(r"<[^<>\s]+>")


def _strip_type(value: str) -> tuple[str | None, str]:
    """`smtp; 550 5.1.1 ...` -> ("smtp", "550 5.1.1 ..."); RFC 3464 section 2.3.6 type ";" text."""
    kind, sep, rest = value.partition(";")
    if sep and _TYPE.fullmatch(kind):
        return kind.strip().lower(), rest.strip()
    return None, value.strip()


# Each recipient of a report falls back on the same whole report (core.memo).
@bounded(maxsize=64, longest=20_000)
def status_of(text: str | None) -> str | None:
    if not text:
        return None
    match = STATUS_RE.search(text)
    if match is None:
        return None
    return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"


def read(text: str) -> DeliveryStatus:
    """Read the text of a delivery-status part (its first MAX_CHARS characters)."""
    reporting: str | None = None
    recipients: list[RecipientReport] = []
    cut = len(text) > MAX_CHARS
    if cut:
        line_end = text.rfind("\n", 0, MAX_CHARS)
        text = text[: line_end + 1 if line_end > 0 else MAX_CHARS]  # whole lines, where there are lines
    for block in field_blocks(text):
        if "reporting-mta" in block and reporting is None:
            reporting = _strip_type(block["reporting-mta"])[1] or None
        final = block.get("final-recipient") or block.get("x-actual-recipient")
        original = block.get("original-recipient")
        if not final and not original:
            continue
        diag_type, diagnostic = _strip_type(block.get("diagnostic-code", ""))
        remote = block.get("remote-mta")
        recipients.append(
            RecipientReport(
                final_recipient=final,
                original_recipient=original,
                action=(block.get("action") or "").strip().split()[0].lower().rstrip(";.")
                if (block.get("action") or "").strip()
                else None,
                status=status_of(block.get("status")),
                diagnostic=diagnostic,
                diagnostic_type=diag_type,
                remote_mta=_strip_type(remote)[1] if remote else None,
                status_comment=STATUS_RE.sub("", block.get("status", ""), count=1).strip(" ()\t"),
            )
        )
    return DeliveryStatus(reporting_mta=reporting, recipients=tuple(recipients), cut=cut)


def reports(texts: Iterable[str]) -> list[DeliveryStatus]:
    """Read the texts of delivery-status parts (or of text parts that carry DSN fields)."""
    return [read(text) for text in texts]


def message_id_in(text: str) -> str | None:
    """The Message-ID field of a block of header text (a returned original's headers)."""
    # Case-sensitive substring tests first (Message-ID, Message-Id, message-id, MESSAGE-ID): a
    # case-blind regex that finds nothing scans the whole text slowly.
    if "essage-" not in text and "ESSAGE-" not in text:
        return None
    match = None
    for found in _MESSAGE_ID_NAME.finditer(text):
        start = found.start()
        if start == 0 or text[start - 1] in "\r\n":  # a field at the start of a line
            match = _MESSAGE_ID.match(text, start)
            if match is not None:
                break
    if match is None:
        return None
    value = _BLANK_RUN.sub(" ", match.group(1)).strip()
    angle = _ANGLE_ID.search(value)
    if angle:
        return angle.group(0)
    return value or None
