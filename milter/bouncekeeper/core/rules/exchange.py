"""Microsoft Exchange, Office 365, Outlook.com / Hotmail: texts of their NDRs, how Exchange 2003 lists
its failed recipients, and the header of Outlook.com's complaints."""

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
    # Exchange Online / Exchange Server texts from Microsoft's NDR reference ("Non-delivery reports in
    # Exchange Online", "NDRs in Exchange Server"; Sisimai's Rhost::Microsoft tabulates them with their
    # codes). The words are Microsoft's own, so they are matched without the code.
    (Reason.SUSPEND, r"access denied, banned recipient|mailbox cannot be accessed"),
    (
        Reason.BLOCKED,
        r"access denied, (?:bad helo|rejected by recipient|banned sending ip)|using customer block list|"
        r"must have a reverse dns record|does not accept email over ipv6|rate limited due to ip reputation",
    ),
    (
        Reason.AUTHFAILURE,
        r"must pass either spf or dkim validation|does not pass dmarc verification|"
        r"because of sender policy framework violation|tlsa-invalid|dnssec-invalid|"
        r"certificate-host-mismatch|certificate-expired: destination",
    ),
    (
        Reason.REJECTED,
        r"sender not in allowed-senders list|sender not authenticated for group|"
        r"sender was not authenticated (?:by organization|for mailbox|for public folder)|"
        r"access denied, bad outbound sender|client blocked from sending from unregistered domains|"
        r"must be rfc 5322 section 3\.6\.2 compliant",
    ),
    (
        Reason.TOOMANYCONN,
        r"recipient thread limit exceeded|reached your daily limit for message recipients|"
        r"submission quota exceeded|per hour message receive limit|has exceeded permitted limits within|"
        r"tenant has exceeded threshold|traffic not accepted from this ip",
    ),
    (
        Reason.SECURITYERROR,
        r"starttls is required to send mail|starttls-not-supported|"
        r"not authenticated to send anonymous mail|cannot achieve exchange server authentication",
    ),
    (
        Reason.SYSTEMERROR,
        r"\(suspiciousremoteservererror\)|server busy\. please try again later from|pfa agent busy|"
        r"message failed to be replicated|misconfigured forwarding address|journaling archive is disabled",
    ),
    (Reason.SPAMDETECTED, r"content filter agent quarantined this message"),
    (Reason.POLICYVIOLATION, r"policy violation detected \(as345\)|x-dg-ref header is too long"),
    (Reason.CONTENTERROR, r"agent generated message depth exceeded"),
)

# Microsoft's JMRP complaint (Outlook.com / Hotmail feedback loop, not ARF): the complained-about message
# is attached with this header added (and some carry it on the report itself).
JMRP_HEADER = "x-hmxmroriginalrecipient"

# Exchange 2003 lists "alice@example.org on Thu, 29 Apr 2010 00:00:00 -0000" under its heading: what may
# follow an address alone on its line (bodies' _ALONE_AFTER). "on" after blanks, which the pattern's
# leading class has already taken (a "\s+on" there backtracked quadratically over long runs of blanks).
LISTED_ON = r"(?<=\s)on\s+\w{3},?\s+\d.*"
