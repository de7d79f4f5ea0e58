"""Mimecast, the filtering service in front of many companies' mail: its SMTP refusals, from its published
list ("Mimecast SMTP Error Codes"; Sisimai's Rhost::Mimecast tabulates them with their reply codes).
Only the texts Mimecast alone writes are here; its "invalid recipient" or "mail loop detected" are read
by the generic tiers.
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.AUTHFAILURE, r"(?:spf|dkim|dmarc) sender invalid - envelope rejected"),
    (
        Reason.BLOCKED,
        r"local ct ip reputation|ip temporarily blacklisted|internal resources are temporarily",
    ),
    (
        Reason.POLICYVIOLATION,
        r"anti-spoofing policy|due to content examination policy|host network not allowed",
    ),
    (
        Reason.REJECTED,
        r"administrative prohibition envelope blocked|envelope blocked . user (?:domain )?entry|"
        r"rejected by header-based (?:manually )?blocked senders|block policy for envelope from",
    ),
    (
        Reason.SECURITYERROR,
        r"this route requires (?:encryption|tls|high-strength ciphers)|"
        r"configuration is invalid for this certificate",
    ),
    (Reason.NOTACCEPT, r"account inbounds disabled"),
    (Reason.TOOMANYCONN, r"account service is temporarily unavailable|exceeding outbound thread limit"),
    (
        Reason.SYSTEMERROR,
        r"unable to process (?:connection at this time|command|an email at this time)|message ended early",
    ),
    (Reason.VIRUSDETECTED, r"email rejected due to security policies"),
)
