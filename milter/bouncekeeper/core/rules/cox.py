"""Cox Communications (cox.net): its inbound refusals carry an "AUP#" code from its published list of
email error codes (cox.com "email error codes"); a few refusals are words only.

The codes, read from that list (and Sisimai's Rhost::Cox, which cites it): CXBL / CDRBL / IPBLnnnn the
sending IP on Cox's or a public block list, CXDNS no reverse DNS, CXSNDR the sender domain failed
SPF/DKIM, CXSMTP an SMTP protocol violation, CXCNCT / CXMXRT too many connections or messages,
CXTHRT / CXMJ sending held for suspicious activity, URLBLnnn a URL of the body on a block list.
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (
        Reason.BLOCKED,
        r"aup#(?:cxbl|cdrbl|ipbl\d{4,5}|cxdns)\b|rejected - no rdns|dns check failure - try again",
    ),
    (Reason.AUTHFAILURE, r"aup#cxsndr\b"),
    (Reason.REJECTED, r"aup#cxsmtp\b"),
    (Reason.TOOMANYCONN, r"aup#(?:cxcnct|cxmxrt)\b|too many sessions from|message threshold exceeded"),
    (Reason.SECURITYERROR, r"aup#(?:cxthrt|cxmj)\b"),
    (Reason.SPAMDETECTED, r"aup#urlbl\d{3,4}\b"),
    (Reason.BLOCKED, r"cox too many bad commands from|too many invalid recipients"),
    (Reason.POLICYVIOLATION, r"attachment extension is forbidden|esmtp no data before greeting"),
)
