"""Spectrum / Charter (charter.net): refusals carry "AUP#" + I (incoming) or O (outgoing) + a four-digit
code from its published list (Spectrum "Understanding email error codes"; Sisimai's Rhost::Spectrum
cites it).

1000 and 1200-1250 the sending IP blocked (suspicious activity, Cloudmark CSI, Spamhaus), 1010-1080
and 1500 / 1520 the sending account or its address refused, 1090 a system error, 1100-1150 no full-
circle reverse DNS, 1160-1190 the sender domain's security policy, 1260 IPv6 not served, 1300-1340
too many connections, 1350-1490 and 1540-1580 rate limits (messages, recipients, invalid recipients),
1530 the message over 20 MB.
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

_AUP = r"aup#[a-z]{0,2}-?"
PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.BLOCKED, _AUP + r"(?:1000|1[12][0-5]\d)\b"),
    (Reason.REJECTED, _AUP + r"(?:10[1-8]\d|1500|1520)\b"),
    (Reason.SYSTEMERROR, _AUP + r"1090\b"),
    (Reason.POLICYVIOLATION, _AUP + r"(?:11[6-9]\d|1560)\b"),
    (Reason.NETWORKERROR, _AUP + r"1260\b"),
    (Reason.MESGTOOBIG, _AUP + r"1530\b"),
    (Reason.TOOMANYCONN, _AUP + r"(?:1[34]\d\d|15[458]0)\b"),
)
