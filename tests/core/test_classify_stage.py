"""An "unknown user" reply and the SMTP stage it answered (failure._user_unknown_by_stage).

A refusal at RCPT TO, one with a status that names the mailbox (x.1.1), or one the report does not place
at any command, says the address is dead; a "user unknown" the report places after DATA is what content
filters say, and is `filtered` (never scored). The stage rule applies only when the report says
the refusal came after the message was sent. Real messages for each case are in test_classify.py's table.
"""

from __future__ import annotations

import pytest

from bouncekeeper.core import classify as classify_module
from bouncekeeper.core.classify import classify
from bouncekeeper.core.failure import _user_unknown_by_stage
from bouncekeeper.core.model import BounceKind, MessageType, Reason

P, T = BounceKind.PERMANENT, BounceKind.TEMPORARY
ADDRESS = "alice@example.org"


def _dsn(status: str, diagnostic: str, human: str) -> bytes:
    """A Postfix-shaped DSN for ADDRESS: the human-readable part, then the delivery-status part."""
    return (
        "From: MAILER-DAEMON@mx.example.net\n"
        "To: sender@example.com\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        f"--B\nContent-Type: text/plain\n\n{human}\n\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.net\n\n"
        f"Final-Recipient: rfc822; {ADDRESS}\nAction: failed\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n"
        "--B--\n"
    ).encode()


def _human(reply: str, command: str | None) -> str:
    said = f"<{ADDRESS}>: host mx.example.org[192.0.2.1] said: {reply}"
    return f"{said} (in reply to {command} command)" if command else said


@pytest.mark.parametrize(
    ("status", "reply", "command", "kind", "reason", "recorded"),
    [
        # Refused at RCPT: the server looked the mailbox up. Dead, whatever the status says.
        ("5.0.0", "550 <alice@example.org>: User unknown", "RCPT TO", P, Reason.USERUNKNOWN, "RCPT"),
        # The same words after DATA: a content filter's refusal.
        ("5.0.0", "550 <alice@example.org>: User unknown", "end of DATA", T, Reason.FILTERED, "DATA"),
        # No stage named: the words stand, a dead address.
        ("5.0.0", "550 <alice@example.org>: User unknown", None, P, Reason.USERUNKNOWN, None),
        # x.1.1 names the mailbox: dead at any stage but MAIL FROM (real Sendmail/Postfix/Exim, tests/mta).
        (
            "5.1.1",
            "550 5.1.1 <alice@example.org>: User unknown",
            "end of DATA",
            P,
            Reason.USERUNKNOWN,
            "DATA",
        ),
        ("5.1.1", "553 5.1.1 <app@example.com>: User unknown", "MAIL FROM", T, Reason.REJECTED, "MAIL"),
        # Words of a dead address about our sender, whatever the command: the recipient was not judged.
        # (Postfix's "Sender address rejected" is read as a refusal of the sender at once, so the report
        # is not searched for the command.)
        (
            "5.1.0",
            "550 5.1.0 <app@example.com>: Sender address rejected: User unknown",
            "RCPT TO",
            T,
            Reason.REJECTED,
            None,
        ),
        (
            "5.1.8",
            "553 5.1.8 <app@example.com>: Domain of sender address does not exist",
            None,
            T,
            Reason.REJECTED,
            None,
        ),
        ("5.7.27", "550 5.7.27 Sender address has null MX", "MAIL FROM", T, Reason.REJECTED, None),
        ("5.1.1", "550 5.1.1 <alice@example.org>: User unknown", None, P, Reason.USERUNKNOWN, None),
        # At MAIL FROM the unknown user is the sender.
        ("5.0.0", "550 User unknown", "MAIL FROM", T, Reason.REJECTED, "MAIL"),
        # A 4xx "user unknown" is a lookup failure the MTA gave up retrying: temporary at any stage.
        ("4.0.0", "450 <alice@example.org>: User unknown", "RCPT TO", T, Reason.USERUNKNOWN, "RCPT"),
    ],
)
def test_user_unknown_is_read_by_the_stage_it_answered(
    status: str, reply: str, command: str | None, kind: BounceKind, reason: Reason, recorded: str | None
) -> None:
    result = classify(_dsn(status, reply, _human(reply, command)))
    assert result.message_type is MessageType.BOUNCE
    (failure,) = result.failures
    assert (failure.kind, failure.reason, failure.smtp_command) == (kind, reason, recorded)


def test_the_stage_is_read_from_the_report_when_the_diagnostic_lacks_it() -> None:
    # Postfix writes "(in reply to end of DATA command)" in the human part only; the Diagnostic-Code is
    # the bare reply. Only the human part can tell a filter's refusal from a dead address.
    reply = "550 <alice@example.org>: User unknown"
    at_data = classify(_dsn("5.0.0", reply, _human(reply, "end of DATA"))).failures[0]
    unstated = classify(_dsn("5.0.0", reply, "The mail system could not deliver your message.")).failures[0]
    assert (at_data.kind, at_data.reason, at_data.smtp_command) == (T, Reason.FILTERED, "DATA")
    assert (unstated.kind, unstated.reason) == (P, Reason.USERUNKNOWN)


def test_the_reporting_mtas_own_words_stand_without_a_remote_reply() -> None:
    # qmail delivering locally: no remote reply, no stage; the MTA knows its own mailboxes.
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: failure notice\n\n"
        b"Hi. This is the qmail-send program at mx.example.net.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        b"<alice@example.org>:\nSorry, no mailbox here by that name.\n"
    )
    (failure,) = classify(raw).failures
    assert (failure.kind, failure.reason) == (P, Reason.USERUNKNOWN)


@pytest.mark.parametrize(
    ("reason", "status", "reply_code", "command", "expected"),
    [
        (Reason.USERUNKNOWN, "5.1.1", 550, "DATA", Reason.USERUNKNOWN),
        (Reason.USERUNKNOWN, "5.1.0", 550, None, Reason.USERUNKNOWN),
        (Reason.USERUNKNOWN, None, 550, "RCPT", Reason.USERUNKNOWN),
        (Reason.USERUNKNOWN, None, 550, "DATA", Reason.FILTERED),
        (Reason.USERUNKNOWN, "5.7.1", 550, None, Reason.USERUNKNOWN),
        (Reason.USERUNKNOWN, None, 550, "MAIL", Reason.REJECTED),
        (Reason.USERUNKNOWN, None, None, None, Reason.USERUNKNOWN),
        (Reason.USERUNKNOWN, None, 450, None, Reason.USERUNKNOWN),
        # Only "user unknown" is re-read: other reasons do not depend on the stage here.
        (Reason.HOSTUNKNOWN, None, 550, "DATA", Reason.HOSTUNKNOWN),
        (Reason.MAILBOXFULL, None, 552, "DATA", Reason.MAILBOXFULL),
    ],
)
def test_the_stage_policy_table(
    reason: Reason, status: str | None, reply_code: int | None, command: str | None, expected: Reason
) -> None:
    assert _user_unknown_by_stage(reason, status, reply_code, command, "550 user unknown") is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Yahoo's own code for a mailbox that does not exist, which it answers after DATA.
        (
            "554 delivery error: dd This user doesn't have a yahoo.com account (a@yahoo.com) [0]",
            Reason.USERUNKNOWN,
        ),
        ("554 delivery error: dd  This user\ndoesn't have an ymail.com account", Reason.USERUNKNOWN),
        # The same words without Yahoo's "dd" code: any gateway could write them; the stage decides.
        ("550 This user doesn't have a example.co.jp account", Reason.FILTERED),
    ],
)
def test_a_providers_own_dead_mailbox_code_outranks_the_stage(text: str, expected: Reason) -> None:
    assert _user_unknown_by_stage(Reason.USERUNKNOWN, "5.0.0", 554, "DATA", text) is expected


def test_flufl_bounce_is_skipped_when_no_text_part_names_an_address(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def spy(msg: object) -> tuple[set[str], set[str]]:
        calls.append(msg)
        return set(), set()

    monkeypatch.setattr(classify_module, "all_failures", spy)
    head = b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Undeliverable mail\n\n"
    nameless = classify(head + b"Your message could not be delivered to one or more recipients.\n")
    assert nameless.message_type is MessageType.UNRECOGNISED
    assert calls == []
    # An address our rules do not take for a recipient (the postmaster's): flufl.bounce is asked.
    classify(head + b"Your message could not be delivered. Ask postmaster@mx.example.net.\n")
    assert len(calls) == 1


def test_a_refusal_at_mail_from_in_one_session_is_not_another_recipients() -> None:
    # Two sessions in one Sendmail report: one host refused our sender, the other the recipient at RCPT.
    raw = (
        b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\nTo: app@example.com\n"
        b"Subject: Returned mail: see transcript for details\n\n"
        b"   ----- The following addresses had permanent fatal errors -----\n"
        b"<a@one.example>\n<c@two.example>\n\n"
        b"   ----- Transcript of session follows -----\n"
        b"... while talking to mx.one.example.:\n>>> MAIL From:<app@example.com>\n"
        b"<<< 553 5.1.8 <app@example.com>... Domain of sender address does not exist\n"
        b"554 5.0.0 <a@one.example>... Service unavailable\n"
        b"... while talking to mx.two.example.:\n>>> RCPT To:<c@two.example>\n"
        b"<<< 550 5.1.1 <c@two.example>... User unknown\n"
        b"550 5.1.1 <c@two.example>... User unknown\n"
    )
    by_address = {f.recipient: f for f in classify(raw).failures}
    assert (by_address["c@two.example"].kind, by_address["c@two.example"].reason) == (P, Reason.USERUNKNOWN)


def test_a_refusal_at_mail_from_in_one_session_is_not_another_recipients_in_a_dsn() -> None:
    # The same two sessions in a Sendmail DSN: the human part lists both, then both transcripts; the
    # delivery-status part gives each its own status.
    human = (
        "   ----- The following addresses had permanent fatal errors -----\n"
        "<a@one.example>\n<c@two.example>\n\n"
        "   ----- Transcript of session follows -----\n"
        "... while talking to mx.one.example.:\n>>> MAIL From:<app@example.com>\n"
        "<<< 550 5.1.0 <app@example.com>... User unknown\n554 5.0.0 <a@one.example>... Service unavailable\n"
        "... while talking to mx.two.example.:\n>>> RCPT To:<c@two.example>\n"
        "<<< 550 5.1.1 <c@two.example>... User unknown\n550 5.1.1 <c@two.example>... User unknown\n"
    )
    raw = (
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\nTo: app@example.com\n"
        "Subject: Returned mail: see transcript for details\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        f"--B\nContent-Type: text/plain\n\n{human}\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: RFC822; a@one.example\nAction: failed\nStatus: 5.1.0\n"
        "Diagnostic-Code: SMTP; 550 5.1.0 <app@example.com>... User unknown\n\n"
        "Final-Recipient: RFC822; c@two.example\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: SMTP; 550 5.1.1 <c@two.example>... User unknown\n--B--\n"
    ).encode()
    by_address = {f.recipient: f for f in classify(raw).failures}
    assert (by_address["a@one.example"].kind, by_address["a@one.example"].reason) == (T, Reason.REJECTED)
    assert (by_address["c@two.example"].kind, by_address["c@two.example"].reason) == (P, Reason.USERUNKNOWN)
