"""Ipswitch IMail Server ("Undeliverable Mail", X-Mailer: <SMTP32 vN>): one line per recipient, the
reason then the address ("Unknown user: a@b"), then "Original message follows." (read from Sisimai's
Lhost::IMailServer).
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.USERUNKNOWN, r"invalid final delivery userid"),
    (Reason.MAILBOXFULL, r"user mailbox exceeds allowed size"),
    # "Unknown host: a@b" (explain() has replaced the address by x@x).
    (Reason.HOSTUNKNOWN, r"\bunknown host: x@x"),
)
