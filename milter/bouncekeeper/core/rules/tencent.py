"""Tencent (QQ Mail, Foxmail, Tencent Exmail: qq.com): its refusals are English phrases documented on
its help pages (service.mail.qq.com "detail/122/..."; Sisimai's Rhost::Tencent lists them). Its
"bad address syntax" is left to the status code: Postfix says the same words of any recipient ("Recipient
address rejected: bad address syntax", 5.1.3, a dead address), and a dialect row outranks the status.
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.AUTHFAILURE, r"(?:spf|dmarc) check failed"),
    (Reason.BLOCKED, r"suspected bounce attacks|suspected spam ip|connection denied"),
    (Reason.MESGTOOBIG, r"message too large"),
    (Reason.SPAMDETECTED, r"spam is embedded in the email|mail content denied|suspected spam"),
    (Reason.REJECTED, r"mail is rejected by recipients"),
    # "Mailbox unavailable or access denied" is how Tencent refuses a sender that sends too fast
    # (its help page 166), not an unknown mailbox.
    (
        Reason.TOOMANYCONN,
        r"mailbox unavailable or access deni|(?:ip|domain|sender|connection) frequency limited",
    ),
    (Reason.SUSPEND, r"is a deactivated mailbox"),
    (Reason.USERUNKNOWN, r"mailbox not found"),
)
