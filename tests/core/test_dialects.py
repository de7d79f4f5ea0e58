"""One message per provider dialect, written here from the provider's published error list (each module's
docstring names it), not copied from any sample: the dialect must read its own documented format."""

from __future__ import annotations

import pytest

from bouncekeeper.core import rules
from bouncekeeper.core.classify import classify
from bouncekeeper.core.model import BounceKind, MessageType, Reason

P, T = BounceKind.PERMANENT, BounceKind.TEMPORARY


def _postfix_bounce(recipient: str, reply: str, command: str = "RCPT TO") -> bytes:
    """A Postfix-shaped DSN relaying a remote server's reply (the layout every dialect below is read in)."""
    return (
        "From: MAILER-DAEMON@out.example.com\n"
        "To: sender@example.com\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="D"\n\n'
        "--D\nContent-Type: text/plain\n\n"
        "I'm sorry to have to inform you that your message could not be delivered.\n\n"
        f"<{recipient}>: host mx.remote.example[192.0.2.7] said: {reply} (in reply to {command} command)\n\n"
        "--D\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; out.example.com\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.0.0\n"
        f"Diagnostic-Code: smtp; {reply}\n"
        "--D--\n"
    ).encode()


# Each reply is written with the provider's code or phrase and otherwise neutral words, so that only the
# dialect can name the reason: the test also checks that, with the dialect switched off, it is not named.
@pytest.mark.parametrize(
    ("dialect", "recipient", "reply", "kind", "reason"),
    [
        # Cox: "AUP#" codes of its email error list.
        ("cox", "ann@cox.net", "550 5.0.0 Message not delivered. AUP#CXBL", T, Reason.BLOCKED),
        ("cox", "ann@cox.net", "550 5.7.1 Message refused. AUP#CXSNDR", T, Reason.AUTHFAILURE),
        ("cox", "ann@cox.net", "550 5.7.1 Message refused. AUP#URLBL1001", T, Reason.SPAMDETECTED),
        # Spectrum / Charter: "AUP#I" / "AUP#O" + four digits.
        ("spectrum", "bob@charter.net", "550 5.0.0 Message not delivered. AUP#I-1000", T, Reason.BLOCKED),
        ("spectrum", "bob@charter.net", "550 5.7.1 Message refused. AUP#O-1550", T, Reason.TOOMANYCONN),
        ("spectrum", "bob@charter.net", "552 5.7.1 Message refused. AUP#I-1530", T, Reason.MESGTOOBIG),
        # GoDaddy (secureserver.net): "IBnnn" at the end of the reply.
        ("godaddy", "cy@example.net", "550 Message not delivered. IB104", T, Reason.BLOCKED),
        ("godaddy", "cy@example.net", "552 Message refused. IB705", T, Reason.VIRUSDETECTED),
        ("godaddy", "cy@example.net", "550 Message refused. IB508", T, Reason.AUTHFAILURE),
        # Tencent (QQ Mail): its documented phrases.
        (
            "tencent",
            "dee@qq.com",
            "550 Mailbox unavailable or access denied. https://service.mail.qq.com/detail/122/166",
            T,
            Reason.TOOMANYCONN,
        ),
        ("tencent", "dee@qq.com", "550 Domain frequency limited", T, Reason.TOOMANYCONN),
        ("tencent", "dee@qq.com", "550 Mail content denied", T, Reason.SPAMDETECTED),
    ],
)
def test_a_providers_documented_reply_is_read_by_its_dialect(
    dialect: str, recipient: str, reply: str, kind: BounceKind, reason: Reason
) -> None:
    result = classify(_postfix_bounce(recipient, reply))
    assert result.message_type is MessageType.BOUNCE
    (failure,) = result.failures
    assert (failure.recipient, failure.kind, failure.reason) == (recipient, kind, reason)
    with rules.without([dialect]):
        (generic,) = classify(_postfix_bounce(recipient, reply)).failures
    assert generic.reason is not reason
