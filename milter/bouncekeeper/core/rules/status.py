"""RFC 3463 enhanced status codes and RFC 5321 reply codes -> reason.

Only codes whose meaning is specific enough to name a reason are listed. Generic ones (x.0.0, x.7.1
"delivery not authorized", x.5.0 ...) are used by MTAs for everything from spam to unknown users, so the
diagnostic text decides for them and the table gives only a last-resort answer.
"""

from __future__ import annotations

import re

from bouncekeeper.core.memo import bounded
from bouncekeeper.core.model import Reason

# subject.detail -> reason, for codes specific enough to trust over text (RFC 3463 section 3, RFC 7372,
# RFC 7505, RFC 3886).
SPECIFIC: dict[str, Reason] = {
    "1.1": Reason.USERUNKNOWN,  # Bad destination mailbox address
    "1.2": Reason.HOSTUNKNOWN,  # Bad destination system address
    "1.3": Reason.USERUNKNOWN,  # Bad destination mailbox address syntax
    "1.6": Reason.HASMOVED,  # Destination mailbox has moved, no forwarding address
    "1.7": Reason.REJECTED,  # Bad sender's mailbox address syntax
    "1.8": Reason.REJECTED,  # Bad sender's system address
    "2.1": Reason.SUSPEND,  # Mailbox disabled, not accepting messages
    "2.2": Reason.MAILBOXFULL,  # Mailbox full
    "2.3": Reason.MESGTOOBIG,  # Message length exceeds administrative limit
    "2.4": Reason.MAILERERROR,  # Mailing list expansion problem
    "3.1": Reason.SYSTEMFULL,  # Mail system full
    "3.2": Reason.NOTACCEPT,  # System not accepting network messages
    "3.4": Reason.MESGTOOBIG,  # Message too big for system
    "4.4": Reason.HOSTUNKNOWN,  # Unable to route (no MX, DNS failure)
    "4.6": Reason.NETWORKERROR,  # Routing loop detected
    "4.7": Reason.EXPIRED,  # Delivery time expired
    "5.3": Reason.EXCEEDLIMIT,  # Too many recipients
    "6.0": Reason.CONTENTERROR,
    "6.1": Reason.CONTENTERROR,  # Media not supported
    "7.7": Reason.SECURITYERROR,  # Message integrity failure
    "7.8": Reason.AUTHFAILURE,  # RFC 4954: authentication credentials invalid
    "7.13": Reason.SUSPEND,  # RFC 3886: user account disabled
    "7.17": Reason.SUSPEND,  # RFC 5248: mailbox owner has changed
    "7.18": Reason.SUSPEND,  # RFC 5248: domain owner has changed
    "7.20": Reason.AUTHFAILURE,  # RFC 7372: no passing DKIM signature
    "7.21": Reason.AUTHFAILURE,
    "7.22": Reason.AUTHFAILURE,
    "7.23": Reason.AUTHFAILURE,  # SPF validation failed
    "7.24": Reason.AUTHFAILURE,  # SPF validation error
    "7.25": Reason.BLOCKED,  # Reverse DNS validation failed
    "7.26": Reason.AUTHFAILURE,  # Multiple authentication checks failed
    "7.27": Reason.REJECTED,  # RFC 7505: sender address has null MX (our sender, not the recipient)
    "7.28": Reason.SPAMDETECTED,  # RFC 8689... mail flood / spam-like
}

# subject.detail -> reason, for codes used loosely by MTAs: only when no text rule matched.
GENERIC: dict[str, Reason] = {
    # RFC 7505 null MX, but Exchange Online uses 5.1.10 for "recipient not found": the text decides.
    "1.10": Reason.NOTACCEPT,
    "1.0": Reason.USERUNKNOWN,
    # Not listed, so that the text or nothing decides (an undefined cause stays `unknown`):
    # x.1.4 "destination mailbox address ambiguous" and x.2.0 "other or undefined mailbox status",
    # which RFC 3463 says of a mailbox that exists.
    "3.0": Reason.SYSTEMERROR,
    "3.3": Reason.SYSTEMERROR,
    "3.5": Reason.SYSTEMERROR,
    "4.0": Reason.NETWORKERROR,
    "4.1": Reason.NETWORKERROR,
    "4.2": Reason.NETWORKERROR,
    "4.3": Reason.SYSTEMERROR,
    "4.5": Reason.NETWORKERROR,
    "5.0": Reason.SYNTAXERROR,
    "5.1": Reason.SYNTAXERROR,
    "5.2": Reason.SYNTAXERROR,
    "5.4": Reason.SYNTAXERROR,
    "5.5": Reason.SYNTAXERROR,
    "6.2": Reason.CONTENTERROR,
    "6.3": Reason.CONTENTERROR,
    "6.4": Reason.CONTENTERROR,
    "6.5": Reason.CONTENTERROR,
    "7.0": Reason.SECURITYERROR,
    "7.1": Reason.REJECTED,
    "7.2": Reason.MAILERERROR,
    "7.3": Reason.SECURITYERROR,
    "7.4": Reason.SECURITYERROR,
    "7.5": Reason.SECURITYERROR,
    "7.6": Reason.SECURITYERROR,
    "7.9": Reason.SECURITYERROR,
    "7.10": Reason.SECURITYERROR,
    "7.11": Reason.SECURITYERROR,
    "7.12": Reason.SECURITYERROR,
    "7.14": Reason.SECURITYERROR,
    "7.15": Reason.SECURITYERROR,
    "7.16": Reason.SECURITYERROR,
    "7.19": Reason.SECURITYERROR,
}

# RFC 5321 section 4.2.3 reply codes that name a reason by themselves.
REPLY_CODES: dict[int, Reason] = {
    552: Reason.MAILBOXFULL,  # "Requested mail action aborted: exceeded storage allocation"
    452: Reason.SYSTEMFULL,  # "insufficient system storage"
    551: Reason.HASMOVED,  # "User not local; please try <forward-path>"
    556: Reason.NOTACCEPT,  # RFC 7504: domain does not accept mail
    521: Reason.NOTACCEPT,  # RFC 7504: host does not accept mail
    421: Reason.TOOMANYCONN,
    554: Reason.REJECTED,
    553: Reason.USERUNKNOWN,  # "mailbox name not allowed"
    550: Reason.UNDEFINED,
}

# A reply code ends with a space or hyphen (RFC 5321 section 4.2), or is followed by ":" or a line
# break in reports that reformat it ("said: 550\n    <a@b>: User unknown", "550: : User unknown").
_REPLY = re.compile(r"([245](?<![\d.\-][245])[0-5]\d)(?=[\s\-:]|$)")  # see dsn.STATUS_RE


def subject_detail(status: str) -> str:
    return status.split(".", 1)[1] if "." in status else ""


def specific(status: str | None) -> Reason | None:
    if not status:
        return None
    return SPECIFIC.get(subject_detail(status))


def generic(status: str | None) -> Reason | None:
    if not status:
        return None
    return GENERIC.get(subject_detail(status))


@bounded(maxsize=64, longest=20_000)  # each recipient of a report falls back on the same report (core.memo)
def reply_code_in(text: str) -> int | None:
    """The first SMTP basic reply code in `text` (`550 5.1.1 ...`, `550-...`)."""
    match = _REPLY.search(text)
    return int(match.group(1)) if match else None
