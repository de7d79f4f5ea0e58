"""Postfix: texts of its bounce(8) reports and of smtpd restrictions on remote Postfix servers."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    # A local delivery agent failed (procmail, a pipe): "Command output:" is local(8)'s report of it.
    (
        Reason.MAILERERROR,
        r"procmail: |command died with (?:status|signal)|\bcommand output: (?!.{0,40}quota)",
    ),
    # DNS lookup failed temporarily ("Host not found, try again"): not a verdict on the domain.
    (Reason.NETWORKERROR, r"host not found, try again|name service error for .{0,80}try again"),
    (
        Reason.USERUNKNOWN,
        r"user unknown in (?:local|virtual|relay) (?:recipient|alias|mailbox) table|"
        r"recipient address rejected: user unknown|unknown user:|undeliverable address: unknown user",
    ),
    (Reason.HOSTUNKNOWN, r"host or domain name not found|domain not found"),
    (Reason.NORELAYING, r"relay access denied"),
    (Reason.MAILBOXFULL, r"mailbox size limit exceeded|maildir size limit|disk quota exceeded"),
    (
        Reason.NETWORKERROR,
        r"mail for .{0,60} loops back to myself|conversation with .{0,80} timed out|"
        r"lost connection with .{0,80} while",
    ),
    (Reason.BLOCKED, r"client host rejected: cannot find your (?:reverse )?hostname"),
    (Reason.REJECTED, r"sender address rejected: domain not found|sender address rejected"),
    (Reason.EXPIRED, r"delivery temporarily suspended"),
)
