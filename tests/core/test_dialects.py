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
        # Orange / La Poste: "OFRnnn_nnn", "LPNnnn_nnn", "OFR_nnn" codes.
        ("orange", "eve@orange.fr", "550 5.0.0 Message not delivered. LPN105_420", T, Reason.SUSPEND),
        ("orange", "eve@orange.fr", "550 5.0.0 Message not delivered. OFR_417", T, Reason.MAILBOXFULL),
        ("orange", "eve@laposte.net", "550 5.0.0 Message not delivered. OFR004_416", P, Reason.USERUNKNOWN),
        # Apple iCloud: its postmaster page's texts.
        (
            "apple",
            "fay@icloud.com",
            "550 5.0.0 recipient no longer on server: fay@icloud.com",
            P,
            Reason.HASMOVED,
        ),
        (
            "apple",
            "fay@icloud.com",
            "450 4.0.0 Messages to fay@icloud.com deferred due to excessive volume.",
            T,
            Reason.TOOMANYCONN,
        ),
        # Mimecast: its SMTP error list.
        (
            "mimecast",
            "gus@example.com",
            "451 Internal resources are temporarily unavailable",
            T,
            Reason.BLOCKED,
        ),
        (
            "mimecast",
            "gus@example.com",
            "550 Administrative prohibition envelope blocked",
            T,
            Reason.REJECTED,
        ),
        # I.UA: "mail.i.ua/err/N".
        ("iua", "hal@i.ua", "550 Message not delivered. See https://mail.i.ua/err/3/", T, Reason.SUSPEND),
        ("iua", "hal@i.ua", "550 Message not delivered. See https://mail.i.ua/err/2/", P, Reason.USERUNKNOWN),
        # Yahoo: its published SMTP error codes.
        (
            "yahoo",
            "lee@yahoo.com",
            "554 delivery error: dd lee@yahoo.com is no longer valid. [-5]",
            T,
            Reason.SUSPEND,
        ),
        (
            "yahoo",
            "lee@yahoo.com",
            "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user "
            "complaints",
            T,
            Reason.BLOCKED,
        ),
        ("yahoo", "lee@yahoo.com", "450 User is receiving mail too quickly", T, Reason.TOOMANYCONN),
        # Facebook: "RCP-P1"-style response codes.
        ("facebook", "kim@facebook.com", "550 5.0.0 Message not delivered. RCP-P1", P, Reason.USERUNKNOWN),
        ("facebook", "kim@facebook.com", "550 5.0.0 Message not delivered. RCP-T4", T, Reason.SUSPEND),
        ("facebook", "kim@facebook.com", "550 5.0.0 Message not delivered. RCP-P2", T, Reason.FILTERED),
        # Exchange Online's NDR reference texts.
        (
            "exchange",
            "jo@contoso.example",
            "550 5.7.505 Access denied, banned recipient",
            T,
            Reason.SUSPEND,
        ),
        (
            "exchange",
            "jo@contoso.example",
            "550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required; "
            "Sender not authenticated for group",
            T,
            Reason.REJECTED,
        ),
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


# Whole reports in the layouts the modules' docstrings describe (written here, not copied): the
# recipient is found by the generic reader, the reason by the dialect.
_DOMINO = """From: Postmaster@notes.example.net
To: sender@example.com
Subject: DELIVERY FAILURE: {subject}
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Your message

  Subject: Project plan

was not delivered to:

  jane@example.net

because:

  {reason}
"""
_NOTES = """From: Postmaster@notes.example.net
To: sender@example.com
Subject: Undeliverable message

------- Failure Reasons  --------

{reason}
jane@example.net

------- Returned Message --------
From: sender@example.com
To: jane@example.net
Subject: plan
"""
_IMAIL = """From: postmaster@mail.example.org
To: sender@example.com
Subject: Undeliverable Mail
X-Mailer: <SMTP32 v8.22>

{reason}: bob@example.org

Original message follows.

From: sender@example.com
To: bob@example.org
"""
_ZOHO = """From: mailer-daemon@mail.zoho.com
To: sender@example.com
Subject: Undelivered Mail Returned to Sender
X-ZohoMail: Si CHF_MF_NL SS_10

This message was created automatically by mail delivery software.
A message that you sent could not be delivered to one or more of its recipients. This is a permanent error.

[Status: Error, Address: <ken@example.co.jp>, ResponseCode 421, , {reason}.]
"""
_KDDI = """From: no-reply@app.auone-net.jp
To: sender@example.com
Subject: Mail System Error - Returned Mail

Your mail sent on: Thu, 05 Mar 2026 11:04:47 +0900
     Could not be delivered to: <taro@ezweb.ne.jp>
     {reason}
"""
_EXCHANGE2003 = """From: System Administrator <postmaster@corp.example.com>
To: sender@example.com
Subject: Undeliverable: plan
X-MS-Embedded-Report:

Your message

  To:      ann@corp.example.com
  Subject: plan
  Sent:    Thu, 05 Mar 2026 18:14:35 +0000

did not reach the following recipient(s):

ann@corp.example.com on Thu, 05 Mar 2026 18:14:35 +0000
    {reason}
"""


@pytest.mark.parametrize(
    ("dialect", "template", "reason_text", "recipient", "kind", "reason", "generic_knows"),
    [
        (
            "domino",
            _DOMINO,
            "User Jane Roe (jane@example.net) not listed in Domino Directory",
            "jane@example.net",
            P,
            Reason.USERUNKNOWN,
            True,
        ),
        (
            "domino",
            _DOMINO,
            "Cannot route mail to user (jane@example.net)",
            "jane@example.net",
            T,
            Reason.SYSTEMERROR,
            False,
        ),
        (
            "domino",
            _NOTES,
            "Message has exceeded maximum hop count",
            "jane@example.net",
            T,
            Reason.NETWORKERROR,
            False,
        ),
        (
            "imailserver",
            _IMAIL,
            "Invalid final delivery userid",
            "bob@example.org",
            P,
            Reason.USERUNKNOWN,
            True,
        ),
        ("zoho", _ZOHO, "Host not reachable", "ken@example.co.jp", T, Reason.EXPIRED, False),
        (
            "kddi",
            _KDDI,
            "As the remote domain doesnt exist.",
            "taro@ezweb.ne.jp",
            P,
            Reason.HOSTUNKNOWN,
            False,
        ),
        (
            "kddi",
            _KDDI,
            "Due to the following SMTP relay error.",
            "taro@ezweb.ne.jp",
            T,
            Reason.NORELAYING,
            False,
        ),
        (
            "kddi",
            _KDDI,
            "The user(s) account is temporarily limited.",
            "taro@ezweb.ne.jp",
            T,
            Reason.SUSPEND,
            False,
        ),
        (
            "exchange",
            _EXCHANGE2003,
            "MSEXCH:IMS:CORP:EXAMPLE:EXCH01 0 (000C05A6) Unknown Recipient",
            "ann@corp.example.com",
            P,
            Reason.USERUNKNOWN,
            True,
        ),
        (
            "exchange",
            _EXCHANGE2003,
            "MSEXCH:IMS:CORP:EXAMPLE:EXCH01 0 (00120270) Too Many Hops",
            "ann@corp.example.com",
            T,
            Reason.NETWORKERROR,
            True,
        ),
    ],
)
def test_a_documented_report_layout_is_read(
    dialect: str,
    template: str,
    reason_text: str,
    recipient: str,
    kind: BounceKind,
    reason: Reason,
    generic_knows: bool,
) -> None:
    raw = template.format(subject=reason_text, reason=reason_text).encode()
    result = classify(raw)
    assert result.message_type is MessageType.BOUNCE
    assert [(f.recipient, f.kind, f.reason) for f in result.failures] == [(recipient, kind, reason)]
    # Where the generic phrases know the words too, the dialect row only makes them outrank a status
    # code; elsewhere the dialect alone names the reason.
    with rules.without([dialect]):
        generic = classify(raw).failures
    assert ([f.reason for f in generic] == [reason]) is generic_knows


# Layouts that need no reader of their own: the generic reader must find the recipient where the format
# puts it (the reason is generic wording, or for BIGLOBE a sentence in rules/kddi.py). Written here from
# the formats Sisimai's parsers describe (Lhost::ApacheJames, Lhost::Biglobe, Lhost::Courier).
_JAMES = """From: postmaster@mx.example.org
To: sender@example.com
Subject: [BOUNCE]
Message-ID: <1234.5.1700000000000.JavaMail.james@mx.example.org>

Hi. This is the James mail server at mx.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

Error message below:
550 - Requested action not taken: no such user here

Message details:
  Subject: Quarterly figures
  Sent date: Mon Mar 02 10:11:12 UTC 2026
  MAIL FROM: sender@example.com
  RCPT TO: alice@example.org
  From: Sender <sender@example.com>
  To: alice@example.org
  Size (in bytes): 812
"""
_BIGLOBE = """From: postmaster@mail.biglobe.ne.jp
To: sender@example.com
Subject: Returned mail: Delivery failed

   ----- The following addresses had delivery problems -----
hanako@pop99.biglobe.ne.jp

   ----- Non-delivered information -----
The number of messages in recipient's mailbox exceeded the local limit.
"""
_COURIER = """From: Courier mail server at mx.example.org <@>
To: sender@example.com
Subject: NOTICE: mail delivery status.
Message-ID: <courier.5F3A1B2C.00001234@mx.example.org>

This is a delivery status notification from mx.example.org,
running the Courier mail server, version 1.0.

                        UNDELIVERABLE MAIL

Your message to the following recipients cannot be delivered:

<sam@example.co.jp>:
    mx.example.co.jp [192.0.2.9]:
>>> RCPT TO:<sam@example.co.jp>
<<< 550 5.1.1 <sam@example.co.jp>... User Unknown
"""


_OPENSMTPD = """From: Mailer Daemon <MAILER-DAEMON@mx.example.org>
To: sender@example.com
Subject: Delivery status notification: {kind}

    Hi!

    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.

    {intro}

una@example.jp: {reply}

{outro}    Below is a copy of the original message:

From: sender@example.com
To: una@example.jp
"""
_OPENSMTPD_ERROR = _OPENSMTPD.format(
    kind="error",
    intro="An error has occurred while attempting to deliver a message for\n"
    "    the following list of recipients:",
    reply="550 5.2.2 <una@example.jp>... Mailbox Full",
    outro="",
)
_MESSAGING_SERVER = """From: Internet Mail Delivery <postmaster@mr.example.com>
To: sender@example.com
Subject: Delivery Notification: Delivery has failed

This report relates to a message you sent with the following header fields:

  Message-id: <abc@example.com>
  From: Sender <sender@example.com>
  To: vic@example.jp
  Subject: Hello

Your message cannot be delivered to the following recipients:

  Recipient address: vic@example.jp
  Reason: Remote SMTP server has rejected address
  Diagnostic code: smtp;550 5.1.1 <vic@example.jp>... User Unknown
  Remote system: dns;mx.example.jp (TCP|192.0.2.1|47323|192.0.2.225|25) (mx.example.jp ESMTP)
"""


@pytest.mark.parametrize(
    ("raw", "recipient", "kind", "reason"),
    [
        (_JAMES, "alice@example.org", P, Reason.USERUNKNOWN),
        (_OPENSMTPD_ERROR, "una@example.jp", T, Reason.MAILBOXFULL),
        (_MESSAGING_SERVER, "vic@example.jp", P, Reason.USERUNKNOWN),
        (_BIGLOBE, "hanako@pop99.biglobe.ne.jp", T, Reason.MAILBOXFULL),
        (_COURIER, "sam@example.co.jp", P, Reason.USERUNKNOWN),
    ],
)
def test_a_documented_layout_is_read_by_the_generic_reader(
    raw: str, recipient: str, kind: BounceKind, reason: Reason
) -> None:
    result = classify(raw.encode())
    assert [(f.recipient, f.kind, f.reason) for f in result.failures] == [(recipient, kind, reason)]


def test_an_opensmtpd_delay_warning_is_a_delay() -> None:
    # OpenSMTPD's bounce.c: "A message is delayed for more than ... / Please note that this is only a
    # temporary failure report ... You DO NOT NEED to re-send the message".
    raw = _OPENSMTPD.format(
        kind="warning",
        intro="A message is delayed for more than 4 hours for the following\n    list of recipients:",
        reply="Network error on destination MXs",
        outro="    Please note that this is only a temporary failure report.\n"
        "    The message is kept in the queue for up to 4 days.\n"
        "    You DO NOT NEED to re-send the message to these recipients.\n\n",
    )
    result = classify(raw.encode())
    assert result.message_type is MessageType.DELAY
    assert ([f.recipient for f in result.delays], result.failures) == (["una@example.jp"], ())
