"""Apple iCloud Mail (icloud.com, me.com, mac.com): the refusals listed on Apple's postmaster page
(support.apple.com 102322 / HT204137, as Sisimai's Rhost::Apple quotes them).
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    # iCloud's "inactive email address" is left to the generic tiers: an inactive account is `suspend`
    # (docs/accuracy.md, "Kind by meaning"), whatever status accompanies it.
    (Reason.USERUNKNOWN, r"unknown or illegal alias"),
    (Reason.HASMOVED, r"recipient no longer on server"),
    (Reason.AUTHFAILURE, r"blocked for failing both spf and dkim"),
    (Reason.POLICYVIOLATION, r"\[cs01\] message rejected due to local policy"),
    (Reason.TOOMANYCONN, r"deferred due to excessive volume"),
    (Reason.BLOCKED, r"support\.proofpoint\.com/dnsbl-lookup|me\.com esmtp not accepting connections"),
)
