"""Exim: texts of its delivery-failure and retry-timeout reports."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

# Exim appends ": retry timeout exceeded" to the last error it saw ("mailbox is full: retry timeout
# exceeded"): that error is the reason, so the suffix is left to the generic EXPIRED row, which comes
# after the specific ones.
PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.EXPIRED, r"retry time not reached for any host after a long failure"),
    (
        Reason.USERUNKNOWN,
        r"unknown local-part|no such user here",
    ),
    (
        # "Unrouteable address" is what Exim's dnslookup router says for a domain that does not exist
        # (checked with a real Exim 4.96, tests/mta/test_real_mta_bounces.py): the host, not the user.
        Reason.HOSTUNKNOWN,
        r"unrouteable address|all relevant mx records point to non-existent hosts|unrouteable mail domain|"
        r"an mx or srv record indicated no smtp service|"
        r"no valid mx|all host address lookups failed",
    ),
    (Reason.MAILERERROR, r"pipe to \|.{0,80}(?:failed|returned)|child process of .{0,60} transport returned"),
    (Reason.NETWORKERROR, r"too many \"received\" headers|remote host address is the local host"),
    (Reason.CONTENTERROR, r"message has lines too long for transport"),
    # What an Exim ACL "deny" without its own message answers: a local policy, not a verdict on the address.
    (Reason.POLICYVIOLATION, r"administrative prohibition"),
    # `exim -t` found a To:/Cc: it could not parse ("malformed address: <a@b> may not follow c@d"): the
    # header's syntax, not a mailbox, failed; the other recipients were delivered.
    (
        Reason.SYNTAXERROR,
        r"malformed address: .{0,200}(?:may not follow|missing|unexpected)|incorrectly constructed",
    ),
)
