"""Delivery status notifications written for the tests, in the shape Postfix gives them (RFC 3464).

Made here, not copied from the corpus: a plain multipart/report with one failed recipient, addressed to
the VERP envelope address the bounce would be delivered to.
"""

from __future__ import annotations


def postfix_dsn(
    rcpt: str, *, to: str, status: str = "5.1.1", n: int = 1, reply: str = "550", text: str | None = None
) -> bytes:
    """`text`: the remote server's words after its codes (default: Postfix's unknown-user refusal)."""
    words = f"<{rcpt}>: Recipient address rejected: User unknown" if text is None else text
    return (
        "Return-Path: <>\r\n"
        f"Delivered-To: {to}\r\n"
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"To: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn{n}.{rcpt}@mx.example.org>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BND"\r\n'
        "\r\n"
        "--BND\r\nContent-Type: text/plain\r\n\r\n"
        f"I'm sorry to have to inform you that your message could not be delivered to {rcpt}.\r\n\r\n"
        "--BND\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\n"
        f"Original-Recipient: rfc822; {rcpt}\r\n"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mx.example.com\r\n"
        f"Diagnostic-Code: smtp; {reply} {status} {words}\r\n\r\n"
        "--BND\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "From: app@example.net\r\n"
        f"To: {rcpt}\r\n"
        f"Message-ID: <orig{n}@example.net>\r\n"
        "Subject: Newsletter\r\n\r\n"
        "--BND--\r\n"
    ).encode()


def hostile_dsn(
    rcpts: list[str],
    *,
    to: str,
    message_id_octets: int = 0,
    n: int = 1,
    remote_mta: str = "mx.example.com",
    terse: bool = False,
) -> bytes:
    """A DSN an attacker can write: one per-recipient group for each of `rcpts`, each with its own
    Remote-MTA, and a returned message whose Message-ID is `message_id_octets` long (docs/security.md: a 91 KB
    DSN naming 200 recipients with a 64 KB Message-ID raised Redis's used_memory by 16.6 MB). `terse`:
    the fewest octets per recipient (no Remote-MTA or Diagnostic-Code), the most recipients per octet."""
    extra = (
        ""
        if terse
        else "Remote-MTA: dns; {mta}\r\nDiagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: User unknown\r\n"
    )
    groups = "".join(
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        + extra.format(mta=remote_mta, rcpt=rcpt)
        + "\r\n"
        for rcpt in rcpts
    )
    message_id = f"<{'m' * max(message_id_octets - 14, 1)}@example.net>"
    return (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"To: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <hostile{n}@mx.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BND"\r\n'
        "\r\n"
        "--BND\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n"
        "--BND\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"{groups}"
        "--BND\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "From: app@example.net\r\n"
        f"Message-ID: {message_id}\r\n"
        "Subject: Newsletter\r\n\r\n"
        "--BND--\r\n"
    ).encode()
