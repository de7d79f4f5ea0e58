"""Amazon SES notifications delivered by e-mail through SNS: a JSON document, not a DSN.

`{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":
..., "action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 ..."}]}, "mail": {...}}`. SNS
wraps long lines with "!" + newline + space, so the document is read with patterns, not json.loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.SUSPEND, r"amazon ses has suppressed sending to this address|on the suppression list"),
)

# SES relays a remote server's refusal under a category of its own: "5.1.0 - Unknown address error
# 550-'5.7.1 <...>... Access denied'", "5.3.0 - Other mail system problem 550-'Unknown user ...'" (the
# quoted reply is the remote's; the category is SES's summary of it and names every 5xx refusal an
# "address error"). The reason is read from the quoted reply alone.
_CATEGORY = re.compile(r"^\s*[45]\.\d{1,3}\.\d{1,3} - [A-Za-z ]{3,60}? (?=[245]\d\d[ -]')")


def remote_reply(text: str) -> str:
    """A diagnostic without SES's own category in front of the remote server's quoted reply."""
    return _CATEGORY.sub("", text, count=1) if " - " in text[:20] else text


_TYPE = re.compile(r'"notificationType"\s*:\s*"(Bounce|Complaint|Delivery)"')
_RECIPIENTS = re.compile(r'"bouncedRecipients"\s*:\s*\[(.*?)\]', re.DOTALL)
_OBJECT = re.compile(r"\{(.*?)\}", re.DOTALL)
_BOUNCE_TYPE = re.compile(r'"bounceType"\s*:\s*"(\w+)"')


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str  # "bounce" | "complaint" | "delivery"
    transient: bool  # bounceType Transient / Undetermined: SES itself says it may pass later
    recipients: tuple[tuple[str, str | None, str, str | None], ...]  # address, status, diagnostic, action


def _field(name: str, text: str) -> str | None:
    match = re.search(r'"' + name + r'"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    return match.group(1) if match else None


def read(text: str) -> Notice | None:
    """The SES notification in `text`, or None when there is none."""
    if "notificationType" not in text:
        return None
    text = re.sub(r"!\n ", "", text)
    if '\\"notificationType' in text:
        # The SNS envelope quotes the SES document as a JSON string: unescape one level.
        text = text.replace('\\"', '"')
    found = _TYPE.search(text)
    if found is None:
        return None
    kind = found.group(1).lower()
    recipients: list[tuple[str, str | None, str, str | None]] = []
    block = _RECIPIENTS.search(text)
    if kind == "bounce" and block is not None:
        for obj in _OBJECT.finditer(block.group(1)):
            address = _field("emailAddress", obj.group(1))
            if address:
                recipients.append(
                    (
                        address,
                        _field("status", obj.group(1)),
                        _field("diagnosticCode", obj.group(1)) or "",
                        _field("action", obj.group(1)),
                    )
                )
    bounce_type = _BOUNCE_TYPE.search(text)
    transient = bool(bounce_type) and bounce_type is not None and bounce_type.group(1) != "Permanent"
    return Notice(kind, transient, tuple(recipients))
