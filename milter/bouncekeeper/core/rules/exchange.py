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
        # Exchange 2000/2003 (MSEXCH:IMS ... "(000C05A6) Unknown Recipient"): its NDR code list.
        r"\(000c05a6\)",
    ),
    (
        Reason.MAILBOXFULL,
        r"resolver\.rst\.mailboxfull|mailbox has exceeded the maximum size|"
        r"the recipient's mailbox is full|mailbox (?:quota|size) exceeded",
    ),
    (Reason.HOSTUNKNOWN, r"dns\.nonexistentdomain|smtpsend\.dns\.mxcheckfailed"),
    # Exchange 2007+ enhanced NDR subcodes ("#550 5.2.0 RESOLVER.ADR.BadPrimary; ...") and Exchange
    # 2000/2003 MSEXCH:IMS codes, after Microsoft's NDR code lists (Sisimai's Lhost::Exchange2007 and
    # Lhost::Exchange2003 tabulate the same): a directory or server fault, never the address.
    (
        Reason.SYSTEMERROR,
        r"resolver\.adr\.(?:badprimary|invalidinsmtp|ambiguous)|\((?:000d06b5|000c0595)\)",
    ),
    (Reason.NETWORKERROR, r"smtpsend\.dns\.mxloopback|\(00120270\)"),
    (Reason.EXCEEDLIMIT, r"resolver\.adr\.reciplimit|\(00010256\)"),
    (Reason.CONTENTERROR, r"\((?:00050311|000502cc)\)"),
    (Reason.EXPIRED, r"queue\.expired"),
    (
        Reason.EXPIRED,
        r"message expired|delivery has failed to these recipients or groups:.{0,200}couldn't be delivered",
    ),
    (
        Reason.BLOCKED,
        r"part of their network is on our block list|\(s3140\)|\(s3150\)|\bsc-00[1-4]\b|"
        r"\bdy-00[1-2]\b|\bov-00\d\b|access denied, banned sender|access denied, spam abuse detected",
    ),
    (
        Reason.SECURITYERROR,
        r"resolver\.rst\.authrequired|not authorized to send e-?mail directly|\(000b0981\)",
    ),
    (Reason.REJECTED, r"resolver\.rst\.(?:notauthorized|sendersizelimit)"),
    (Reason.MESGTOOBIG, r"resolver\.rst\.recipsizelimit|message exceeds? the maximum size"),
    (Reason.FILTERED, r"resolver\.rst\.restrictedtorecipientspermission"),
)
