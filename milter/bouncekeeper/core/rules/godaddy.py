"""GoDaddy (secureserver.net): its refusals end with an "IBnnn" code from its published bounce-back list
(GoDaddy help "What does my email bounceback mean?"); a few are words only.

The codes, read from that list (and Sisimai's Rhost::GoDaddy, which cites it): IB401 authentication on
an inbound server, IB501 / IB502 / IB506 an empty, IP-literal or unresolvable From (our sender), IB508
SPF, IB108 no reverse DNS, IB212 spam, IB705 a virus, IB605 / IB007 / IB101 / IB504 / IB510 / IB607 rate
limits, IB110-IB113 the IP blocked for spam or for too many invalid recipients, IB103-IB106 the IP on a
reputation or block list.
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.SECURITYERROR, r"\bib401\b"),
    (Reason.REJECTED, r"\bib50[126]\b"),
    (Reason.AUTHFAILURE, r"\bib508\b"),
    (Reason.BLOCKED, r"\bib(?:108|11[0-3]|10[3-6])\b|\brbl reject\b"),
    (Reason.SPAMDETECTED, r"\bib212\b|message rejected for spam or virus content"),
    (Reason.VIRUSDETECTED, r"\bib705\b"),
    (Reason.TOOMANYCONN, r"\bib(?:605|007|101|504|510|607)\b"),
    (Reason.MAILBOXFULL, r"account storage limit"),
    (Reason.SUSPEND, r"\baccount disabled\b"),
    (Reason.EXPIRED, r"has been in the queue too long|\bdelivery timeout\b"),
)
