"""Yahoo (and Yahoo-hosted domains: ymail, rocketmail, att.net ...)."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (
        Reason.USERUNKNOWN,
        r"this user doesn't have a .{0,30} account|user doesn't have a yahoo|"
        r"\bdd this user doesn't",
    ),
    (
        Reason.BLOCKED,
        r"\[ts0[1-4]\]|\[bl21\]|\[bl22\]|\[bl23\]|temporarily deferred due to user complaints|"
        r"\bts0\d\b.{0,40}(?:deferred|block)|"
        # Yahoo's published SMTP error codes (senders.yahooinc.com/smtp-error-codes): [TSS04] "deferred
        # due to unexpected volume or user complaints", [TSS09] / [TSS11] "will be permanently deferred".
        r"deferred due to unexpected volume or user complaints|will be permanently deferred",
    ),
    (Reason.SPAMDETECTED, r"\[ts0[3-4]\]|message not accepted for policy reasons"),
    (Reason.MAILBOXFULL, r"\[dd\] the user's mailbox is full|over quota"),
    (Reason.TOOMANYCONN, r"user is receiving mail too quickly|max message per connection reached"),
    # "554 delivery error: dd a@yahoo.com is no longer valid": Yahoo's word for an account it closed for
    # inactivity (its error list), which it may give out again: held, not an unknown user.
    (Reason.SUSPEND, r"\bdd \S+ is no longer valid"),
    # "This account has been disabled or discontinued": the owner's account is closed or on hold, which
    # says nothing certain about the address for good (suspend, never a dead address: docs/accuracy.md).
    (Reason.SUSPEND, r"account (?:is |has been )?(?:disabled|inactive|deactivated|discontinued)"),
)

# Yahoo refuses a mailbox that does not exist after DATA, not at RCPT ("554 delivery error: dd This user
# doesn't have a yahoo.com account", its published error list): for its "dd" code, the stage says nothing
# and the text is evidence of a dead address (rules.dead_at_any_stage).
DEAD_AT_ANY_STAGE: tuple[str, ...] = (r"\bdd this user doesn't have an? ",)
