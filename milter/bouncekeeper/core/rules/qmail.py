"""qmail and its forks (netqmail, s/qmail, vpopmail, Plesk): texts of qmail-send and qmail-remote."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    # "does not like recipient." is qmail-remote's wrapper for any RCPT rejection: the remote's words
    # that follow it decide, so it is not a row here.
    (Reason.USERUNKNOWN, r"no mailbox here by that name|sorry, no mailbox"),
    (Reason.MAILBOXFULL, r"recipient's mailbox is full|mailbox is full \(#5\.2\.2\)|disk quota exceeded"),
    (
        Reason.HOSTUNKNOWN,
        r"sorry, i couldn't find any host (?:by that name|named)|"
        r"sorry\. although i'm listed as a best-preference mx|couldn't find any host",
    ),
    (
        Reason.MAILERERROR,
        r"unable to chdir to maildir|temporary error on maildir delivery|"
        r"unable to run qmail-|qmail-local",
    ),
    (
        Reason.NETWORKERROR,
        r"sorry, i wasn't able to establish an smtp connection|"
        r"connected to .{0,60} but sender was rejected|connected to .{0,60} but greeting failed",
    ),
    (Reason.SYSTEMERROR, r"this message has been in the queue too long"),
    (Reason.SUSPEND, r"this address no longer accepts mail"),
    (Reason.EXCEEDLIMIT, r"message is looping"),
)
