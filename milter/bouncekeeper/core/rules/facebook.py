"""Facebook (mx.facebook.com): its refusals carry a response code "RCP-P1", "POL-T2" ... from its
postmaster page's list (postmaster.facebook.com/response_codes, as Sisimai's Lhost::Facebook quotes it):
a category (RCP recipient, MSG message, POL policy, DNS, CON connection, INT internal), P permanent or T
temporary, and a number.
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.USERUNKNOWN, r"\b(?:rcp-p1|int-p[134])\b"),
    # The recipient's preferences or privacy settings refused the message: nothing about the address.
    (Reason.FILTERED, r"\brcp-p[23]\b"),
    (Reason.SUSPEND, r"\brcp-t4\b"),  # "currently deactivated; the user may or may not reactivate it"
    (Reason.MESGTOOBIG, r"\b(?:msg-p1|int-p2)\b"),
    (Reason.CONTENTERROR, r"\b(?:msg-p[23]|pol-p6)\b"),
    (Reason.SECURITYERROR, r"\bpol-p[1257]\b"),
    (Reason.NOTACCEPT, r"\b(?:pol-p[34]|pol-t[1-3])\b"),
    (Reason.REJECTED, r"\bdns-[pt][1-3]\b"),
    (Reason.TOOMANYCONN, r"\bcon-t[1-4]\b"),
    (Reason.SYSTEMERROR, r"\b(?:int-t\d|rcp-t1)\b"),
)
