"""I.UA (Ukraine; i.ua, email.ua): each refusal points to "mail.i.ua/err/N", N from its published list
(Sisimai's Rhost::IUA tabulates it).
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

_ERR = r"\.i\.ua/err/"
PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.NORELAYING, _ERR + r"[16]\b"),
    (Reason.USERUNKNOWN, _ERR + r"2\b"),
    (Reason.SUSPEND, _ERR + r"3\b"),  # the mailbox was not used for more than three months
    (Reason.MAILBOXFULL, _ERR + r"4\b"),
    (Reason.TOOMANYCONN, _ERR + r"5\b"),
    (Reason.BLOCKED, _ERR + r"[79]\b"),
    (Reason.REJECTED, _ERR + r"8\b"),
    (Reason.FILTERED, _ERR + r"10\b"),  # the recipient accepts only the senders on its list
)
