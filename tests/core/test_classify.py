"""The classifier on real messages (tests/fixtures/bounces, provenance in PROVENANCE.md) and per stage."""

from __future__ import annotations

import base64
import pathlib

import pytest

from bouncekeeper.core import classify as classify_module
from bouncekeeper.core import message, mime
from bouncekeeper.core.classify import classify
from bouncekeeper.core.model import BounceKind, Delay, Failure, MessageType, Reason, Stage

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "bounces"

P, T, U = BounceKind.PERMANENT, BounceKind.TEMPORARY, BounceKind.UNKNOWN

# fixture -> (message type, {failed recipient: (kind, reason)}). Read from each message by hand.
BOUNCES: dict[str, tuple[MessageType, dict[str, tuple[BounceKind, Reason]]]] = {
    # Postfix DSN; "550 Unknown user" answered to end of DATA: a content filter, not a dead address.
    "sisimai-bsd-lhost-postfix-03.eml": (MessageType.BOUNCE, {"kijitora@example.net": (T, Reason.FILTERED)}),
    # Yahoo's "554 delivery error: dd This user doesn't have a yahoo.com account" comes after DATA: Yahoo
    # refuses unknown mailboxes there, so its "dd" text outranks the stage policy.
    "sisimai-bsd-rhost-yahooinc-03.eml": (
        MessageType.BOUNCE,
        {"this-local-part-does-not-exist@yahoo.com": (P, Reason.USERUNKNOWN)},
    ),
    # Exim -t: a To: entry it could not parse ("a@b <c@d>": c@d is the address, a@b its display name,
    # named again after "may not follow"); the header's syntax failed, not a mailbox.
    "sisimai-bsd-lhost-exim-52.eml": (MessageType.BOUNCE, {"neko@example.net": (T, Reason.SYNTAXERROR)}),
    # fml refused a non-member's article: the list address, from fml's own notice (no DSN, no daemon).
    "sisimai-bsd-lhost-fml-02.eml": (MessageType.BOUNCE, {"neko-nyaan@example.org": (T, Reason.REJECTED)}),
    # Postfix's "Delivery report unavailable": a DSN with no recipient; the returned message's one To:.
    "sisimai-debug-issue-15-01.eml": (MessageType.BOUNCE, {"xxxx@wanadoo.fr": (U, Reason.UNDEFINED)}),
    "sisimai-bsd-lhost-sendmail-01.eml": (
        MessageType.BOUNCE,
        {"userunknown@bouncehammer.jp": (P, Reason.USERUNKNOWN)},
    ),
    # CRLF line ends.
    "sisimai-dos-lhost-yahoo-01.eml": (MessageType.BOUNCE, {"kijitora@example.org": (P, Reason.USERUNKNOWN)}),
    # Exim plain-text report: "Please use the smtp server of your ISP" after MAIL FROM: says nothing
    # about the recipient.
    "sisimai-bsd-lhost-exim-01.eml": (MessageType.BOUNCE, {"kijitora@example.ed.jp": (T, Reason.REJECTED)}),
    "sisimai-bsd-lhost-exim-02.eml": (
        MessageType.BOUNCE,
        {"kijitora@example.jp": (P, Reason.USERUNKNOWN), "sabatora@example.jp": (P, Reason.USERUNKNOWN)},
    ),
    "sisimai-bsd-lhost-qmail-01.eml": (
        MessageType.BOUNCE,
        {"kijitora@example.ne.jp": (P, Reason.USERUNKNOWN)},
    ),
    # The same qmail report with CR-only (old Mac) line ends.
    "sisimai-mac-lhost-qmail-01.eml": (
        MessageType.BOUNCE,
        {"kijitora@example.ne.jp": (P, Reason.USERUNKNOWN)},
    ),
    # Gmail puts the remote reply two paragraphs below the address.
    "sisimai-bsd-lhost-gmail-01.eml": (
        MessageType.BOUNCE,
        {"userunknown@example.jp": (P, Reason.USERUNKNOWN)},
    ),
    "sisimai-bsd-lhost-office365-01.eml": (
        MessageType.BOUNCE,
        {"kijitora@example.com": (P, Reason.USERUNKNOWN)},
    ),
    "sisimai-bsd-lhost-exchange2007-02.eml": (
        MessageType.BOUNCE,
        {"kijitora@example.edu": (T, Reason.MAILBOXFULL)},
    ),
    "sisimai-bsd-rhost-aol-01.eml": (MessageType.BOUNCE, {"kijitora@example.jp": (P, Reason.HOSTUNKNOWN)}),
    # One report, two recipients, two outcomes.
    "sisimai-bsd-lhost-gmx-03.eml": (
        MessageType.BOUNCE,
        {
            "mikeneko@example.co.jp": (P, Reason.USERUNKNOWN),
            "sabineko@example.co.jp": (T, Reason.MAILBOXFULL),
        },
    ),
    "sisimai-bsd-lhost-mailru-02.eml": (
        MessageType.BOUNCE,
        {"kijitora@example.jp": (T, Reason.MAILBOXFULL)},
    ),
    # Amazon SES notification (JSON through SNS), not a DSN.
    "sisimai-bsd-lhost-amazonses-09.eml": (
        MessageType.BOUNCE,
        {"bounce@simulator.amazonses.com": (P, Reason.USERUNKNOWN)},
    ),
    # DSN with bare "Status: 5.0.0" per recipient; the reasons are in the human-readable part.
    "sisimai-bsd-lhost-opensmtpd-17.eml": (
        MessageType.BOUNCE,
        {
            "userunknown@libsisimai.net": (P, Reason.USERUNKNOWN),
            "mailboxfull@libsisimai.net": (T, Reason.MAILBOXFULL),
        },
    ),
    "sisimai-bsd-rfc3464-08.eml": (MessageType.BOUNCE, {"kijitora@example.net": (T, Reason.SPAMDETECTED)}),
    # multipart/report whose boundary never occurs: the DSN is read from the unsplit body.
    "sisimai-bsd-rhost-google-02.eml": (
        MessageType.BOUNCE,
        {"neko-nyaan@example.org": (P, Reason.USERUNKNOWN)},
    ),
    # Blank lines before the header, and flufl.bounce raises IndexError on it.
    "phpbouncehandler-exchange1.eml": (
        MessageType.BOUNCE,
        {"phk@nordiskeiendom.no": (P, Reason.USERUNKNOWN)},
    ),
    # Mail.ru bounce marked Auto-Submitted: auto-replied, with an RFC 2047 subject.
    "flufl-simple_39.eml": (MessageType.BOUNCE, {"userx@example.ru": (P, Reason.USERUNKNOWN)}),
    "flufl-qmail_03.eml": (MessageType.BOUNCE, {"userx@example.jp": (P, Reason.USERUNKNOWN)}),
    # "User unknown" and the SMTP stage (failure._user_unknown_by_stage). m-FILTER states that its
    # "550 unknown user" answered DATA: a content filter's refusal, not a dead address.
    "sisimai-bsd-lhost-mfilter-01.eml": (MessageType.BOUNCE, {"kijitora@example.com": (T, Reason.FILTERED)}),
    # SurfControl: "550 ... No such user" with Status 5.0.0 and no stage named: the report does not
    # place the refusal after DATA, so the words stand: a dead address.
    "sisimai-bsd-lhost-surfcontrol-01.eml": (
        MessageType.BOUNCE,
        {"kijitora@example.com": (P, Reason.USERUNKNOWN)},
    ),
    # Yahoo's "550: : User unknown" (a reply code before a colon), no stage named: the same.
    "sisimai-bsd-lhost-yahoo-06.eml": (
        MessageType.BOUNCE,
        {"otsu-sakaba-hunter-neko-nyaaaaaaan@ezweb.ne.jp": (P, Reason.USERUNKNOWN)},
    ),
    # X3 "SMTP:RCPT host ...: 553 5.3.0 ... No such user here": refused at RCPT, the address is dead
    # although the status (5.3.0) does not say so.
    "sisimai-bsd-lhost-x3-03.eml": (MessageType.BOUNCE, {"kijitora@example.co.jp": (P, Reason.USERUNKNOWN)}),
    # Sendmail transcript ">>> DATA / <<< 550 5.5.0 Invalid recipient / <<< 554 no valid recipients":
    # with PIPELINING the first reply after DATA is the RCPT's, so the address is dead.
    "sisimai-bsd-lhost-sendmail-46.eml": (
        MessageType.BOUNCE,
        {"pseudo-local-part-kijitora-nyaaan@laposte.net": (P, Reason.USERUNKNOWN)},
    ),
    # Outlook.com "554 ... because the domain is not reachable".
    "sisimai-bsd-lhost-outlook-03.eml": (
        MessageType.BOUNCE,
        {"kijitora@example.jp": (P, Reason.HOSTUNKNOWN)},
    ),
    # Amazon SES wraps the remote reply in its own category: "5.1.0 - Unknown address error 550-'5.7.1
    # ... Access denied'". The remote's 5.7.1 is the status and its words the reason; "unknown address"
    # is SES's word, not the remote's (rules/amazonses.remote_reply): not a dead address.
    "sisimai-bsd-lhost-amazonses-01.eml": (
        MessageType.BOUNCE,
        {"shironeko@example.co.jp": (T, Reason.BLOCKED)},
    ),
    # "553 Exceeded maximum inbound message size": a size limit, although 553 alone reads as a bad
    # mailbox name (RFC 5321 section 4.2.3).
    "flufl-dsn_03.eml": (MessageType.BOUNCE, {"userx@example.be": (T, Reason.MESGTOOBIG)}),
    # Not failures.
    "sisimai-bsd-arf-12.eml": (MessageType.FEEDBACK, {}),
    "phpbouncehandler-fbl-yahoo.eml": (MessageType.FEEDBACK, {}),
    # Microsoft JMRP complaint (not ARF): the attached message carries X-HmXmrOriginalRecipient.
    "sisimai-bsd-arf-22.eml": (MessageType.FEEDBACK, {}),
    # Auto-Submitted: auto-replied from a no-reply sender: an auto-reply, not a daemon's bounce.
    "sisimai-bsd-rfc3834-06.eml": (MessageType.AUTOREPLY, {}),
    "sisimai-bsd-rfc3834-01.eml": (MessageType.AUTOREPLY, {}),
    "phpbouncehandler-pr17-vac1.eml": (MessageType.AUTOREPLY, {}),
    "sisimai-bsd-rfc3464-28.eml": (MessageType.DELIVERED, {}),
    "sisimai-not-is-not-bounce-02.eml": (MessageType.UNRECOGNISED, {}),
}

# Delay warnings: the recipient is only delayed (never a failure).
DELAYS: dict[str, str] = {
    "sisimai-bsd-lhost-outlook-06.eml": "kijitora@example.com",  # Action: delayed
    "sisimai-bsd-lhost-sendmail-29.eml": "this-local-part-does-not-exist-on-the-system@y-mobile.ne.jp",
    "sisimai-bsd-lhost-exim-38.eml": "kijitora@example.co.jp",  # Exim's plain-text delay warning
}


def _read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("name", sorted(BOUNCES))
def test_real_message_is_classified(name: str) -> None:
    message_type, expected = BOUNCES[name]
    result = classify(_read(name))
    assert result.message_type is message_type
    got = {f.recipient: (f.kind, f.reason) for f in result.failures}
    assert got == expected
    assert result.errors == () or name == "phpbouncehandler-exchange1.eml"


@pytest.mark.parametrize("name", sorted(DELAYS))
def test_delay_warning_is_no_failure(name: str) -> None:
    result = classify(_read(name))
    assert result.message_type is MessageType.DELAY
    assert result.failures == ()
    assert [d.recipient for d in result.delays] == [DELAYS[name]]
    assert all(d.kind is BounceKind.TEMPORARY for d in result.delays)


def test_a_delay_is_typed_as_one_and_a_failure_never_is() -> None:
    # Every stage that finds a delayed recipient (a DSN's Action, a plain-text delay notice, the VERP
    # attribution) gives a Delay, and no failure is one, with or without a VERP recipient.
    stages: set[Stage] = set()
    for path in sorted(FIXTURES.parent.rglob("*.eml")):
        for verp in (None, "someone@example.org"):
            result = classify(path.read_bytes(), verp_recipient=verp)
            assert [type(f) for f in result.failures] == [Failure] * len(result.failures), path.name
            assert [type(d) for d in result.delays] == [Delay] * len(result.delays), path.name
            stages.update(d.stage for d in result.delays)
    assert {Stage.DSN, Stage.RULES, Stage.VERP} <= stages


# Bounce-shaped, but no rule of ours reads it: it reaches flufl.bounce's stage.
_FOR_FLUFL = b"From: MAILER-DAEMON@example.net\nSubject: Undeliverable: hello\n\nask postmaster@example.net\n"


def test_each_message_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # One parse of the message's bytes (core.message) serves every stage; the stdlib parses it again only
    # for flufl.bounce's detectors, which read an email.message.Message of their own.
    parsed: list[bytes] = []
    stdlib: list[bytes] = []
    detected: list[object] = []
    real_parse, real_stdlib, real_flufl = (
        mime.parse,
        classify_module._stdlib_parse,
        classify_module.all_failures,
    )

    def parse(raw: bytes, cut: list[str] | None = None) -> mime.Part:
        parsed.append(raw)
        return real_parse(raw, cut)

    def stdlib_parse(data: bytes) -> object:
        stdlib.append(data)
        return real_stdlib(data)

    def all_failures(msg: object) -> object:
        detected.append(msg)
        return real_flufl(msg)  # type: ignore[arg-type]

    monkeypatch.setattr(mime, "parse", parse)
    monkeypatch.setattr(classify_module, "_stdlib_parse", stdlib_parse)
    monkeypatch.setattr(classify_module, "all_failures", all_failures)
    messages = [path.read_bytes() for path in sorted(FIXTURES.parent.rglob("*.eml"))]
    for raw in [*messages, _FOR_FLUFL]:
        parsed.clear()
        classify(raw)
        assert parsed.count(message.prepare(raw, [])) == 1
    assert len(stdlib) == len(detected) >= 1


def test_every_fixture_has_an_expectation() -> None:
    names = {p.name for p in FIXTURES.glob("*.eml")}
    assert names == set(BOUNCES) | set(DELAYS)


def test_flufl_exception_is_recorded_and_the_next_stage_still_runs() -> None:
    # The DSN stage answers first; flufl.bounce is not needed and must not be what decides.
    result = classify(_read("phpbouncehandler-exchange1.eml"))
    assert result.failures[0].stage is Stage.DSN


def test_dsn_fields_are_reported() -> None:
    result = classify(_read("sisimai-bsd-lhost-opensmtpd-17.eml"))
    by_address = {f.recipient: f for f in result.failures}
    full = by_address["mailboxfull@libsisimai.net"]
    assert full.status == "5.2.2"  # the vague Status: 5.0.0 gives way to the precise code in the text
    assert full.reply_code == 552
    assert full.dsn_class is BounceKind.PERMANENT
    assert full.action == "failed"
    assert full.stage is Stage.DSN


def test_original_message_id_is_found_for_correlation() -> None:
    result = classify(_read("sisimai-bsd-rfc3464-08.eml"))
    assert result.original_message_id == "<000000000000000000000000000000@mx.example.or.jp>"
    plain = classify(_read("sisimai-bsd-lhost-qmail-01.eml"))  # quoted after "--- Below this line ..."
    assert plain.original_message_id == "<000000000.9999999999999.JavaMail.postmaster@mailhub>"


def test_bounce_loop_signals() -> None:
    result = classify(_read("sisimai-bsd-lhost-postfix-03.eml"), envelope_sender="")
    assert "null-sender" in result.loop_signals
    assert any(s.startswith("multipart-report") for s in result.loop_signals)


# -- VERP ------------------------------------------------------------------------------------------


def test_verp_recipient_is_authoritative_for_the_failure() -> None:
    result = classify(_read("sisimai-bsd-lhost-gmx-03.eml"), verp_recipient="sabineko@example.co.jp")
    assert [(f.recipient, f.reason) for f in result.failures] == [
        ("sabineko@example.co.jp", Reason.MAILBOXFULL)
    ]
    assert result.verp_recipient == "sabineko@example.co.jp"


def test_verp_recipient_not_listed_takes_the_first_failure() -> None:
    result = classify(_read("sisimai-bsd-lhost-qmail-01.eml"), verp_recipient="Alice@Example.org")
    (failure,) = result.failures
    assert failure.recipient == "alice@example.org"
    assert (failure.kind, failure.reason, failure.stage) == (P, Reason.USERUNKNOWN, Stage.VERP)


def test_verped_message_that_is_no_bounce_is_an_autoreply() -> None:
    result = classify(_read("sisimai-not-is-not-bounce-02.eml"), verp_recipient="alice@example.org")
    assert result.message_type is MessageType.AUTOREPLY
    assert result.failures == ()


def test_verped_unreadable_bounce_is_unknown_for_the_verp_recipient() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces+x@example.org\r\nSubject: Undeliverable\r\n\r\n"
        b"Something went wrong with your message.\r\n"
    )
    result = classify(raw, verp_recipient="bob@example.com")
    assert result.message_type is MessageType.BOUNCE
    (failure,) = result.failures
    assert (failure.recipient, failure.kind, failure.stage) == ("bob@example.com", U, Stage.VERP)


def test_verp_keeps_a_delay_a_delay() -> None:
    result = classify(_read("sisimai-bsd-lhost-outlook-06.eml"), verp_recipient="carol@example.com")
    assert result.message_type is MessageType.DELAY
    assert [d.recipient for d in result.delays] == ["carol@example.com"]
    assert result.failures == ()


def test_encoded_word_in_x_failed_recipients_is_decoded() -> None:
    # Google writes a UTF-8 local part as an RFC 2047 encoded word in X-Failed-Recipients.
    raw = (
        b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
        b"To: sender@example.com\r\n"
        b"X-Failed-Recipients: =?UTF-8?B?8J+QiEBleGFtcGxlLm9yZw==?=\r\n"
        b"Subject: Delivery Status Notification (Failure)\r\n"
        b"Content-Type: text/plain; charset=UTF-8\r\n"
        b"\r\n"
        b"Delivery to the following recipient failed permanently:\r\n\r\n"
        b"Technical details of permanent failure:\r\n"
        b" local-part of envelope contains utf8 but remote server did not offer SMTPUTF8\r\n"
    )
    result = classify(raw)
    assert [f.recipient for f in result.failures] == ["\U0001f408@example.org"]


def _prog_mailer_dsn(code: str, transcript: str) -> bytes:
    """Sendmail's report of a local program (prog mailer) that failed: its exit status as an X-Unix code."""
    return (
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.org>\r\n"
        "To: app@example.net\r\nSubject: Returned mail: see transcript for details\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\n\r\n   ----- The following addresses had permanent fatal errors -----\r\n"
        f'"|/usr/local/bin/deliver"\r\n    (reason: {code})\r\n'
        "    (expanded from: <list@example.org>)\r\n\r\n"
        f"   ----- Transcript of session follows -----\r\n{transcript}\r\n\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        "Final-Recipient: RFC822; list@example.org\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        f"Diagnostic-Code: X-Unix; {code}\r\n\r\n--B--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("code", "transcript", "reason"),
    [
        ("127", "Permission denied", Reason.MAILERERROR),  # the program's output says no more than its code
        ("77", "mailbox is full", Reason.MAILBOXFULL),  # its output names the reason
    ],
)
def test_a_local_program_exit_status_is_a_mailer_error_unless_its_output_says_why(
    code: str, transcript: str, reason: Reason
) -> None:
    (failure,) = classify(_prog_mailer_dsn(code, transcript)).failures
    assert failure.recipient == "list@example.org"
    assert failure.reason is reason


def _report_without_recipients(
    returned_headers: str, human: str = "Your message could not be delivered."
) -> bytes:
    """A delivery-status report with per-message fields only (Postfix's "Delivery report unavailable")."""
    return (
        "From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        f"--B\nContent-Type: text/plain\n\n{human}\n\n--- Delivery report unavailable ---\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        f"--B\nContent-Type: text/rfc822-headers\n\n{returned_headers}\n--B--\n"
    ).encode()


def test_a_report_listing_no_recipient_names_the_returned_messages_one_recipient() -> None:
    result = classify(_report_without_recipients("From: sender@example.com\nTo: Alice <Alice@Example.org>\n"))
    assert result.message_type is MessageType.BOUNCE
    (failure,) = result.failures
    assert (failure.recipient, failure.kind, failure.stage) == ("alice@example.org", U, Stage.RETURNED)


@pytest.mark.parametrize(
    ("headers", "human"),
    [
        # Two recipients: which one failed is not said, so none is guessed.
        ("To: alice@example.org\nCc: bob@example.org\n", "Your message could not be delivered."),
        ("To: alice@example.org,\n bob@example.org\n", "Your message could not be delivered."),
        # A delay warning is no failure, whoever it names.
        ("To: alice@example.org\n", "Delivery delayed. The mail system will continue trying."),
        ("Subject: no recipient header\n", "Your message could not be delivered."),
    ],
)
def test_a_report_listing_no_recipient_is_not_guessed_at_when_unclear(headers: str, human: str) -> None:
    result = classify(_report_without_recipients(headers, human))
    assert (result.message_type, result.failures) == (MessageType.UNRECOGNISED, ())


def test_an_fml_notice_needs_fmls_own_headers() -> None:
    notice = (FIXTURES / "sisimai-bsd-lhost-fml-02.eml").read_bytes()
    assert classify(notice).failures[0].recipient == "neko-nyaan@example.org"
    # The same text in an ordinary message from a person: not a bounce.
    forwarded = notice.replace(b"X-MLServer: fml", b"X-Mailer: mutt")
    assert classify(forwarded).failures == ()


def test_the_returned_messages_headers_name_no_recipient_when_the_report_names_one() -> None:
    # The returned original's To/Cc are who the sender wrote to, not who failed; they are
    # read only for a report that names nobody (Stage.RETURNED).
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Mail delivery failed\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\n"
        b"A message that you sent could not be delivered to one or more of its recipients.\n\n"
        b"  gone@example.org\n    unknown user\n\n"
        b"--B\nContent-Type: message/rfc822\n\n"
        b"From: sender@example.com\nTo: team@example.org, gone@example.org\nCc: boss@example.org\n"
        b"Subject: hello\n\nhi\n--B--\n"
    )
    result = classify(raw)
    assert [(f.recipient, f.kind) for f in result.failures] == [("gone@example.org", BounceKind.PERMANENT)]


def test_a_delivery_status_report_is_read_as_a_bounce_whatever_its_subject_and_sender() -> None:
    # RFC 6522: multipart/report; report-type=delivery-status is a delivery report by its structure.
    # This one's delivery-status part names nobody, its subject is French and it has no From: the
    # human-readable part is read (base64, so only our own reader sees its text).
    body = base64.b64encode(
        "A message could not be delivered to:\nsomeone@example.fr\n"
        "L'adresse de messagerie référencée ci-dessus n'existe pas.\n".encode()
    ).decode()
    raw = (
        "To: list-bounces@example.org\n"
        "Subject: =?UTF-8?Q?Utilisateur_non_recens=C3=A9?=\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\n\n'
        f"--R\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n{body}\n"
        "--R\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; gw.example.fr\n\n--R--\n"
    ).encode()
    result = classify(raw)
    assert [f.recipient for f in result.failures] == ["someone@example.fr"]


def test_an_exchange_did_not_reach_report_names_its_recipient() -> None:
    # Exchange's classic NDR: "Your message did not reach some or all of the intended recipients",
    # then "Did not reach the following recipient: a@b".
    body = base64.b64encode(
        b"Your Message\n\nTo:      <ken@example.net>\nSubject: plan\n\n"
        b"Did not reach the following recipient: ken@example.net\n"
    ).decode()
    raw = (
        "From: Postmaster <postmaster@example.net>\nTo: sender@example.org\n"
        "Subject: Undeliverable: plan\nMIME-Version: 1.0\nContent-Type: text/plain\n"
        f"Content-Transfer-Encoding: base64\n\n{body}\n"
    ).encode()
    assert [f.recipient for f in classify(raw).failures] == ["ken@example.net"]


def test_a_quoted_local_part_in_a_text_report_keeps_its_quotes_where_it_needs_them() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Mail delivery failed\n\n"
        b"A message that you sent could not be delivered to one or more of its recipients.\n"
        b"The following address(es) failed:\n\n"
        b'  "john smith"@example.org\n    unknown user\n'
        b'  "a..b"@example.org\n    unknown user\n'
        b'  "carol"@example.org\n    unknown user\n'
    )
    assert [f.recipient for f in classify(raw).failures] == [
        '"john smith"@example.org',
        '"a..b"@example.org',
        "carol@example.org",
    ]


@pytest.mark.parametrize(
    "line",
    [
        "Intended recipient: rae@example.net",
        "The following message, addressed to 'rae@example.net',\nfailed because it was not collected",
        "Your message to local user rae.\n(Originally addressed to rae@example.net)\nUser not known",
        "  an undisclosed address\n    (generated from rae@example.net)",
    ],
)
def test_a_report_that_names_its_recipient_in_so_many_words_is_read(line: str) -> None:
    # Layouts with no list of failed addresses (bodies.named_recipients); base64, so that flufl.bounce,
    # which reads undecoded bodies, cannot be what finds them.
    body = base64.b64encode(
        f"This message was created automatically by mail delivery software.\n\n{line}\n".encode()
    ).decode()
    raw = (
        "From: postmaster@mx.example.net\nTo: sender@example.org\nSubject: Delivery failure\n"
        f"MIME-Version: 1.0\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n{body}\n"
    ).encode()
    assert [f.recipient for f in classify(raw).failures] == ["rae@example.net"]
