"""Yahoo (and Yahoo-hosted domains: ymail, rocketmail, att.net ...)."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (
        Reason.USERUNKNOWN,
        r"this user doesn't have a .{0,30} account|user doesn't have a yahoo|"
        r"\bdd this user doesn't|"
        # Yahoo's "This account has been disabled or discontinued": discontinued is gone, not suspended.
        r"has been disabled or discontinued",
    ),
    (
        Reason.BLOCKED,
        r"\[ts0[1-4]\]|\[bl21\]|\[bl22\]|\[bl23\]|temporarily deferred due to user complaints|"
        r"\bts0\d\b.{0,40}(?:deferred|block)",
    ),
    (Reason.SPAMDETECTED, r"\[ts0[3-4]\]|message not accepted for policy reasons"),
    (Reason.MAILBOXFULL, r"\[dd\] the user's mailbox is full|over quota"),
    (Reason.SUSPEND, r"account (?:is )?(?:disabled|inactive|deactivated)"),
)
