"""au by KDDI (ezweb.ne.jp, au.com) and BIGLOBE (biglobe.ne.jp), Japanese carriers and ISPs whose
English reports name the reason in a sentence of their own ("Could not be delivered to: <a@b> / As their
mailbox is full."; EZweb's "The user(s) account is disabled."; "----- Non-delivered information -----"),
read from Sisimai's Lhost::KDDI, Lhost::EZweb and Lhost::Biglobe.
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (
        Reason.MAILBOXFULL,
        r"as their mailbox is full|number of messages in recipient's mailbox exceeded the local limit",
    ),
    (Reason.MAILBOXFULL, r"the user\(s\) account is temporarily over quota"),
    # An unpaid or restricted au subscription: the account is held, not gone.
    (Reason.SUSPEND, r"the user\(s\) account is (?:disabled|temporarily limited)"),
    (Reason.EXPIRED, r"your message was not delivered within \d+ days? and \d+ hours?"),
    (Reason.NORELAYING, r"due to the following smtp relay error"),
    (Reason.HOSTUNKNOWN, r"as the remote domain doesnt exist"),
)
