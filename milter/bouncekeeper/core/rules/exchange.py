"""Microsoft Exchange, Office 365, Outlook.com / Hotmail: texts of their NDRs."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    # Exchange Online's directory-based edge blocking: "550 5.4.1 Recipient address rejected: Access
    # denied" means the recipient is not in the tenant's directory.
    (Reason.USERUNKNOWN, r"5\.4\.1 .{0,80}recipient address rejected: access denied"),
    (
        Reason.USERUNKNOWN,
        r"resolver\.adr\.recip(?:ient)?notfound|resolver\.adr\.exrecip|"
        r"recipient not found by smtp address lookup|the e-?mail address you entered couldn't be found|"
        r"the recipient's e-?mail address (?:was|couldn't be) (?:not )?found|couldn't be found|"
        r"smtpsend\.dns\.nonexistentdomain",
    ),
    (
        Reason.MAILBOXFULL,
        r"resolver\.rst\.mailboxfull|mailbox has exceeded the maximum size|"
        r"the recipient's mailbox is full|mailbox (?:quota|size) exceeded",
    ),
    (Reason.HOSTUNKNOWN, r"dns\.nonexistentdomain|smtpsend\.dns\.mxcheckfailed"),
    (
        Reason.EXPIRED,
        r"message expired|delivery has failed to these recipients or groups:.{0,200}couldn't be delivered",
    ),
    (
        Reason.BLOCKED,
        r"part of their network is on our block list|\(s3140\)|\(s3150\)|\bsc-00[1-4]\b|"
        r"\bdy-00[1-2]\b|\bov-00\d\b|access denied, banned sender|access denied, spam abuse detected",
    ),
    (Reason.SECURITYERROR, r"resolver\.rst\.authrequired|not authorized to send e-?mail directly"),
    (Reason.REJECTED, r"resolver\.rst\.(?:notauthorized|sendersizelimit)|resolver\.rst\.recipsizelimit"),
    (Reason.MESGTOOBIG, r"resolver\.rst\.recipsizelimit|message exceeds? the maximum size"),
    (Reason.FILTERED, r"resolver\.rst\.restrictedtorecipientspermission"),
)
