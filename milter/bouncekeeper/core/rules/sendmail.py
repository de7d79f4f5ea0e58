"""Sendmail: texts of its "Returned mail" reports."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.USERUNKNOWN, r"\.\.\. user unknown|\.\.\. no such user|mailbox unavailable or access denied"),
    (
        Reason.HOSTUNKNOWN,
        r"host unknown \(name server:|name server: .{0,60} host not found|"
        r"\.\.\. deferred: name server timeout",
    ),
    (Reason.EXPIRED, r"cannot send message for \d+ days?|message could not be delivered for \d+"),
    (Reason.NORELAYING, r"\.\.\. relaying denied"),
    (Reason.REJECTED, r"\.\.\. sender (?:address )?rejected|domain of sender address .{0,80} does not exist"),
    (Reason.MAILERERROR, r"unknown mailer error|\.\.\. service unavailable"),
    (Reason.SYSTEMFULL, r"insufficient disk space"),
)
