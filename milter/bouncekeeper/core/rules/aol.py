"""AOL (and Verizon / Yahoo's former AOL MX)."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (
        Reason.USERUNKNOWN,
        r"mailbox not available\.? \(?recipient|rcpt :: .{0,40} not valid|"
        r"the aol member .{0,80} (?:is no longer|could not be)",
    ),
    (Reason.MAILBOXFULL, r"rcpt :: .{0,40} over quota|mailbox full"),
    (Reason.BLOCKED, r"\bdyn:t1\b|\brtr:bb\b|\bhvu:b1\b|\bdnsbl:|\brlts:"),
    (Reason.SPAMDETECTED, r"\bcon:b1\b"),
)
