"""au by KDDI (ezweb.ne.jp, au.com) and BIGLOBE (biglobe.ne.jp), Japanese carriers and ISPs whose
English reports name the reason in a sentence of their own ("Could not be delivered to: <a@b> / As their
mailbox is full."; "----- Non-delivered information -----"), read from Sisimai's Lhost::KDDI and
Lhost::Biglobe.
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (
        Reason.MAILBOXFULL,
        r"as their mailbox is full|number of messages in recipient's mailbox exceeded the local limit",
    ),
    (Reason.NORELAYING, r"due to the following smtp relay error"),
    (Reason.HOSTUNKNOWN, r"as the remote domain doesnt exist"),
)
