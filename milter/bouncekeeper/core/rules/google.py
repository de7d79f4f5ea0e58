"""Gmail and Google Workspace (their texts carry a support URL with a stable ?p= key)."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    # Google Groups: the group "may not exist, or you may not have permission to post": no address verdict.
    # Its notices in every language point to the same help URL.
    (
        Reason.REJECTED,
        r"you may not have permission to post|the group you tried to contact|groups\.google\.com/support",
    ),
    (
        Reason.USERUNKNOWN,
        r"\?p=nosuchuser|the email account that you tried to reach does not exist|"
        r"address couldn't be found, or is unable to receive mail",
    ),
    (
        Reason.SUSPEND,
        r"\?p=disableduser|the email account that you tried to reach is disabled|"
        r"account that you tried to reach is inactive",
    ),
    (
        Reason.MAILBOXFULL,
        r"\?p=overquotatemp|\?p=overquotaperm|the email account that you tried to reach is over quota|"
        r"out of storage space",
    ),
    (Reason.SPAMDETECTED, r"\?p=unsolicitedmessageerror|likely unsolicited mail|\?p=utf8spam"),
    (Reason.BLOCKED, r"\?p=ipreputation|\?p=senderreputation|very low reputation|\?p=blocked"),
    (Reason.AUTHFAILURE, r"\?p=(?:dmarc|spf|dkim|bulksenderguide|unauthenticated)|unauthenticated email"),
    (Reason.MESGTOOBIG, r"\?p=maxsizeerror|message exceeded .{0,30}size"),
    (Reason.TOOMANYCONN, r"\?p=receivingrate|\?p=sendinglimits|receiving mail at a rate"),
    (Reason.VIRUSDETECTED, r"\?p=bulkvirus|\?p=virus"),
    (Reason.POLICYVIOLATION, r"\?p=(?:blockedmessage|messagebody|content)|violat(?:ion|es) .{0,30}polic"),
    (Reason.HOSTUNKNOWN, r"\?p=dnserror|dns error: domain name not found"),
)
