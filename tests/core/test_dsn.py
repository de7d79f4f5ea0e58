"""RFC 3464 / RFC 6533 delivery-status reading."""

from __future__ import annotations

from bouncekeeper.core import dsn
from bouncekeeper.core.classify import classify
from bouncekeeper.core.model import BounceKind, MessageType, Reason


def test_per_recipient_blocks_are_read() -> None:
    text = (
        "Reporting-MTA: dns; mx.example.net\n"
        "Arrival-Date: Thu, 29 Apr 2010 23:34:45 +0900\n\n"
        "Final-Recipient: rfc822; alice@example.org\n"
        "Original-Recipient: rfc822;Alice@Example.ORG\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Remote-MTA: dns; mx.example.org\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <alice@example.org>: Recipient address\n"
        "    rejected: User unknown in local recipient table\n\n"
        "Final-Recipient: rfc822; bob@example.com\n"
        "Action: delayed\n"
        "Status: 4.4.1\n"
    )
    report = dsn.read(text)
    assert report.reporting_mta == "mx.example.net"
    alice, bob = report.recipients
    assert alice.final_recipient == "rfc822; alice@example.org"
    assert alice.original_recipient == "rfc822;Alice@Example.ORG"
    assert (alice.action, alice.status, alice.remote_mta) == ("failed", "5.1.1", "mx.example.org")
    assert alice.diagnostic_type == "smtp"
    # RFC 5322 folding undone: one logical line.
    assert alice.diagnostic.endswith("Recipient address rejected: User unknown in local recipient table")
    assert (bob.action, bob.status) == ("delayed", "4.4.1")


def test_blocks_without_blank_lines_and_indented_fields() -> None:
    text = (
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.2.2\n"
        "Final-Recipient: rfc822; b@example.org\nAction: failed\n  Status: 5.1.1\n"
    )
    a, b = dsn.read(text).recipients
    assert (a.recipient, a.status) == ("rfc822; a@example.org", "5.2.2")
    assert (b.recipient, b.status) == ("rfc822; b@example.org", "5.1.1")


def test_status_comment_and_odd_status_values() -> None:
    (r,) = dsn.read(
        "Final-Recipient: rfc822; a@example.org\nAction: failure\nStatus: 5.0.0 (disk quota)\n"
    ).recipients
    assert (r.status, r.status_comment) == ("5.0.0", "disk quota")
    (r,) = dsn.read("Final-Recipient: rfc822; a@example.org\nStatus: 553 too big\n").recipients
    assert r.status is None
    assert r.status_comment == "553 too big"


def test_status_of_finds_rfc3463_codes_only() -> None:
    assert dsn.status_of("550 5.1.1 <a@b.example> unknown") == "5.1.1"
    assert dsn.status_of("#5.1.10 RESOLVER") == "5.1.10"
    assert dsn.status_of("version 1.5.1.2 of x") is None
    assert dsn.status_of("") is None


def test_message_id_of_quoted_headers() -> None:
    headers = "Subject: hi\nMessage-ID:\n <abc@example.org>\nFrom: x@example.org\n"
    assert dsn.message_id_in(headers) == "<abc@example.org>"
    assert dsn.message_id_in("Subject: no id\n") is None


# A hand-written RFC 6533 section 6 report: message/global-delivery-status with a UTF-8 Final-Recipient
# (utf-8 address type) and message/global-headers. No such message is in the corpus.
GLOBAL_DSN = """From: MAILER-DAEMON@mx.example.net
To: sender@example.org
Subject: Undeliverable
MIME-Version: 1.0
Content-Type: multipart/report; report-type=global-delivery-status; boundary="G"

--G
Content-Type: text/plain; charset=utf-8

Delivery to the following recipient failed permanently: 用户@例子.example

--G
Content-Type: message/global-delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: utf-8; 用户@例子.example
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 mailbox does not exist

--G
Content-Type: message/global-headers

Message-ID: <orig-1@example.org>
Subject: =?utf-8?b?5L2g5aW9?=

--G--
""".encode()


def test_rfc6533_global_delivery_status_is_read_like_the_others() -> None:
    result = classify(GLOBAL_DSN)
    assert result.message_type is MessageType.BOUNCE
    (failure,) = result.failures
    assert failure.recipient == "用户@例子.example"
    assert (failure.kind, failure.reason, failure.status) == (
        BounceKind.PERMANENT,
        Reason.USERUNKNOWN,
        "5.1.1",
    )
    assert result.original_message_id == "<orig-1@example.org>"


def test_mixed_outcomes_in_one_report_each_get_their_own_result() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nSubject: Delivery Status Notification\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        b"Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n\n"
        b"Final-Recipient: rfc822; full@example.org\nAction: failed\nStatus: 5.2.2\n\n"
        b"Final-Recipient: rfc822; slow@example.org\nAction: delayed\nStatus: 4.4.1\n\n"
        b"Final-Recipient: rfc822; ok@example.org\nAction: delivered\nStatus: 2.0.0\n\n--B--\n"
    )
    result = classify(raw)
    assert result.message_type is MessageType.BOUNCE
    assert {(f.recipient, f.kind, f.reason) for f in result.failures} == {
        ("gone@example.org", BounceKind.PERMANENT, Reason.USERUNKNOWN),
        ("full@example.org", BounceKind.TEMPORARY, Reason.MAILBOXFULL),
    }
    assert [d.recipient for d in result.delays] == ["slow@example.org"]
    full = next(f for f in result.failures if f.recipient == "full@example.org")
    assert full.dsn_class is BounceKind.PERMANENT  # the status class is kept beside the kind


def test_success_dsn_has_no_failures() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nSubject: Successful Mail Delivery Report\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: message/delivery-status\n\n"
        b"Final-Recipient: rfc822; ok@example.org\nAction: relayed\nStatus: 2.0.0\n\n--B--\n"
    )
    result = classify(raw)
    assert result.message_type is MessageType.DELIVERED
    assert result.failures == ()
    assert result.delays == ()
