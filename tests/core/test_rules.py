"""Reason tables and the kind rule: permanent only when the address itself is dead."""

from __future__ import annotations

import pathlib
import re

import pytest

from bouncekeeper.core import rules
from bouncekeeper.core.failure import _kind
from bouncekeeper.core.model import ADDRESS_REASONS, BounceKind, Reason
from bouncekeeper.core.rules import bodies, prefilter, status

R = Reason


@pytest.mark.parametrize(
    ("text", "status_code", "expected"),
    [
        (
            "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown in virtual mailbox table",
            "5.1.1",
            R.USERUNKNOWN,
        ),
        ("550 Requested action not taken: mailbox unavailable", None, R.USERUNKNOWN),
        ("sorry, no mailbox here by that name. (#5.1.1)", None, R.USERUNKNOWN),
        ("550 5.2.2 The email account that you tried to reach is over quota", "5.2.2", R.MAILBOXFULL),
        ("552 5.2.2 Mailbox full", "5.1.1", R.MAILBOXFULL),  # the text beats a loosely used code
        ("Host or domain name not found. Name service error for name=x.example type=MX", None, R.HOSTUNKNOWN),
        (
            "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
            "5.7.1",
            R.BLOCKED,
        ),
        ("550 5.7.1 Message rejected as spam by Content Filtering", "5.7.1", R.SPAMDETECTED),
        (
            "550 5.7.26 Unauthenticated email from example.com is not accepted due to DMARC policy",
            "5.7.26",
            R.AUTHFAILURE,
        ),
        ("552 5.3.4 Message size exceeds fixed limit", "5.3.4", R.MESGTOOBIG),
        # A 553 alone reads as "mailbox name not allowed"; the words say it is a size limit.
        ("553 Exceeded maximum inbound message size", None, R.MESGTOOBIG),
        (
            "554 The mail could not be delivered to the recipient because the domain is not reachable.",
            "5.5.0",
            R.HOSTUNKNOWN,
        ),
        ("554 5.4.7 retry timeout exceeded", "5.4.7", R.EXPIRED),
        ("550 5.2.1 The email account that you tried to reach is disabled", "5.2.1", R.SUSPEND),
        ("421 4.7.0 Try again later, closing connection. (rate limit)", "4.7.0", R.TOOMANYCONN),
        ("554 5.7.1 <a@b.example>: Relay access denied", "5.7.1", R.NORELAYING),
        ("550 5.1.6 recipient no longer on server", "5.1.6", R.HASMOVED),
        ("556 5.1.10 Recipient address has null MX", "5.1.10", R.NOTACCEPT),
        ("Diagnostic: 554 5.7.0 Virus found in message", "5.7.0", R.VIRUSDETECTED),
        # Sendmail's delay warning: the connection, not a filter, refused.
        ("<a@b.example>... Deferred: Connection refused by [192.0.2.1]", "4.4.1", R.NETWORKERROR),
        ("Message refused by recipient's filter", None, R.FILTERED),
        ("  a@b.invalid\n    Unrouteable address", "5.0.0", R.HOSTUNKNOWN),  # Exim: no such domain
        # Google Groups, in any language: the same help URL.
        ("Vielen Dank! https://groups.google.com/support/ Google Groups", None, R.REJECTED),
        # Providers that answer in their own language only.
        ("Utilisateur inconnu", None, R.USERUNKNOWN),
        ("La boîte aux lettres est pleine", None, R.MAILBOXFULL),
        ("Usuario desconocido", None, R.USERUNKNOWN),
        ("Benutzer unbekannt", None, R.USERUNKNOWN),
        ("Destinatario inesistente", None, R.USERUNKNOWN),
        ("Gebruiker onbekend", None, R.USERUNKNOWN),
        ("收件人不存在", None, R.USERUNKNOWN),
        ("对方邮箱已满", None, R.MAILBOXFULL),
        ("宛先がみつかりませんでした。", None, R.USERUNKNOWN),
        ("メールボックスが一杯です", None, R.MAILBOXFULL),
        ("Domaine inconnu", None, R.HOSTUNKNOWN),
        ("", None, R.UNDEFINED),
    ],
)
def test_reason_for_texts_of_many_mtas(text: str, status_code: str | None, expected: Reason) -> None:
    assert rules.reason_for(text, status_code, status.reply_code_in(text)) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("550 5.1.1 <a@b.example>: User unknown", 550),
        ("550-5.1.1 The email account that you tried to reach does not exist.", 550),
        # Reports that reformat the reply: a colon, or the rest wrapped onto the next line.
        ("<a@b.example>: 550: : User unknown", 550),
        ("host mx.b.example[192.0.2.22] said: 550\n    <a@b.example>: User unknown", 550),
        # Not reply codes: an address's digits, an IPv4 octet, a status code, a number in words.
        ("<user550@b.example>: unknown", None),
        ("host 192.0.2.250 refused", None),
        ("Status: 5.1.1", None),
        ("after 5500 seconds", None),
    ],
)
def test_reply_code_in_text(text: str, expected: int | None) -> None:
    assert status.reply_code_in(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Exim's delay warning names only the address (tests/fixtures/mta/exim-refused-delay.eml).
        ("The address to which the message has not yet been delivered is: refused@refused.test", R.UNDEFINED),
        ("<spamhaus@x.example>: host x.example said: 550 User unknown", R.USERUNKNOWN),
        ("<trojan@virus.example>: host x.example said: 550 Rejected", R.REJECTED),
        # The domain stops before Sendmail's "..." (its own USERUNKNOWN row needs it).
        ("550 5.1.1 <a@b.example>... User unknown", R.USERUNKNOWN),
    ],
)
def test_words_of_an_address_are_no_reason(text: str, expected: Reason) -> None:
    assert rules.reason_for(text, None, None) is expected


def test_status_code_decides_when_the_text_is_silent() -> None:
    assert rules.reason_for("delivery failed", "5.1.2", None) is R.HOSTUNKNOWN
    assert rules.reason_for("delivery failed", "5.2.2", None) is R.MAILBOXFULL


@pytest.mark.parametrize("reason", sorted(ADDRESS_REASONS))
def test_address_reasons_with_a_5xx_are_permanent(reason: Reason) -> None:
    assert _kind(reason, BounceKind.PERMANENT) is BounceKind.PERMANENT


@pytest.mark.parametrize(
    "reason",
    [
        R.MAILBOXFULL,
        R.BLOCKED,
        R.SPAMDETECTED,
        R.POLICYVIOLATION,
        R.AUTHFAILURE,
        R.MESGTOOBIG,
        R.TOOMANYCONN,
        R.FILTERED,
        R.SUSPEND,
        R.REJECTED,
        R.EXPIRED,
    ],
)
def test_other_reasons_are_temporary_even_with_a_5xx(reason: Reason) -> None:
    assert _kind(reason, BounceKind.PERMANENT) is BounceKind.TEMPORARY


def test_notaccept_needs_a_5xx_and_4xx_is_never_permanent() -> None:
    assert _kind(R.NOTACCEPT, BounceKind.TEMPORARY) is BounceKind.TEMPORARY
    assert _kind(R.NOTACCEPT, BounceKind.UNKNOWN) is BounceKind.TEMPORARY
    assert _kind(R.USERUNKNOWN, BounceKind.TEMPORARY) is BounceKind.TEMPORARY
    assert _kind(R.UNDEFINED, BounceKind.PERMANENT) is BounceKind.UNKNOWN


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<a@b.example>: host x said: 550 user unknown (in reply to end of DATA command)", "DATA"),
        ("SMTP error from remote mail server after RCPT TO:<a@b.example>:", "RCPT"),
        ("... while talking to mx.example.:\n>>> DATA\n<<< 550 5.7.1 no\n", "DATA"),
        (">>> RCPT To:<a@b.example>\n<<< 550 5.1.1 unknown\n", "RCPT"),
        # PIPELINING: the RCPT's refusal arrives after DATA was sent, then DATA's own reply.
        (">>> DATA\n<<< 550 5.5.0 Invalid recipient\n<<< 554 5.5.1 Error: no valid recipients\n", "RCPT"),
        (">>> DATA\n<<< 354 Go ahead\n>>> .\n<<< 550 5.7.1 Content rejected\n", "DATA"),
        # Postfix wraps long lines anywhere.
        ("said: 550 5.7.1 no (in reply to end of\n    DATA command)", "DATA"),
        ("550 unknown user (in reply to MAIL FROM command)", "MAIL"),
        # qmail: the furthest stage any MX reached, and each MX's reply.
        ("Sorry, no SMTP connection got far enough; most progress was RCPT TO response; remote ...", "RCPT"),
        ("(Other MXes tried: 192.0.2.32 said 550 for RCPT TO response)", "RCPT"),
        # SMTP32, Yahoo, SendGrid, m-FILTER, X3.
        ("RCPT TO generated following response:\n553 5.3.0 <a@b.example>... Addressee unknown", "RCPT"),
        ("Remote host said: 550 5.1.1 <a@b.example>... User Unknown [RCPT_TO]", "RCPT"),
        ("550 5.1.1 <a@b.example>... User Unknown  in RCPT TO", "RCPT"),
        ("-------server message\n550 unknown user <a@b.example>\n\n-------SMTP command\nDATA\n", "DATA"),
        ("SMTP:RCPT host 192.0.2.233: 553 5.3.0 <a@b.example>... No such user here", "RCPT"),
        ("550 user unknown", None),
        # An envelope listing is no stage: "RCPT TO: <address>" names the recipient, not a reply.
        ("550 - no such user here\n  MAIL FROM: a@b.example\n  RCPT TO: c@d.example\n", None),
        ("Please read our data protection policy before you reply.", None),
    ],
)
def test_smtp_command_of_a_report(text: str, expected: str | None) -> None:
    assert bodies.smtp_command(text) == expected


def test_context_stops_at_the_next_recipient() -> None:
    text = "a@example.org: 550 5.1.1 User unknown\nb@example.org: 552 5.2.2 Mailbox full\n"
    assert "Mailbox full" not in bodies.context_for(text, "a@example.org")
    assert "Mailbox full" in bodies.context_for(text, "b@example.org")


def test_find_recipients_skips_senders_and_message_ids() -> None:
    text = (
        "The following addresses had permanent fatal errors:\n"
        "<gone@example.org>\n    (reason: 550 5.1.1 User unknown)\n\n"
        "Message-ID: <123.456@mx.example.net>\nFrom: Sender <sender@example.net>\n"
        "MAIL FROM:<sender@example.net> rejected? no\n"
    )
    found = [address for address, _ in bodies.find_recipients(text, exclude=set())]
    assert found == ["gone@example.org"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # RFC 6531: a local part may be any UTF-8, emoji included (Gmail's SMTPUTF8 refusal).
        ("     \U0001f408@example.jp", ["\U0001f408@example.jp"]),
        ("     jörg@example.jp", ["jörg@example.jp"]),
        # Punctuation before an address is not part of it.
        ("宛先：kijitora@example.jp: user unknown", ["kijitora@example.jp"]),
        # "a@b <c@d>": c@d is the address, a@b a display name written as one.
        ("  a@example.com <c@example.net>: malformed address", ["c@example.net"]),
        ("  a@example.com <a@example.com>", ["a@example.com"]),
    ],
)
def test_find_recipients_reads_the_address_of_a_line(line: str, expected: list[str]) -> None:
    text = f"Delivery to the following recipient failed permanently:\n\n{line}\n\nUser unknown\n"
    assert [address for address, _ in bodies.find_recipients(text, exclude=set())] == expected


def test_prefilter_literals_are_in_every_match() -> None:
    assert prefilter.literals(r"mail ?box (?:is )?full") == ("mail",)
    assert set(prefilter.literals(r"user unknown|no such user") or ()) == {"user unknown", "no such user"}
    assert prefilter.literals(r"\bptr\b|x") is None  # one branch has no literal: the regex must always run
    # Every row, on every fixture text: whenever a row's regex matches, one of its literals is present,
    # so skipping rows by literal never changes a result.
    fixtures = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "bounces"
    texts = [" ".join(p.read_bytes().decode("latin-1").split()).lower() for p in fixtures.glob("*.eml")]
    checked = 0
    table = rules._TABLE
    for row_index, row in enumerate(table.rows):
        literals = [lit for lit, rows in table.by_literal.items() if row_index in rows]
        for text in texts:
            if row.pattern.search(text):
                checked += 1
                assert row_index in table.always or any(lit in text for lit in literals), row.pattern.pattern
    assert checked > 50


def test_rule_tables_are_lower_case() -> None:
    # explain() lower-cases the text and compiles the rows without IGNORECASE: an upper-case letter in a
    # row (outside escapes and classes) could never match.
    for row in rules._TABLE.rows:
        stripped = re.sub(r"\\[A-Za-z]|\[[^\]]*\]|\(\?[A-Za-z<=!:]", "", row.pattern.pattern)
        assert not re.search(r"[A-Z]", stripped), row.pattern.pattern
    stripped = re.sub(r"\\[A-Za-z]|\[[^\]]*\]|\(\?[A-Za-z<=!:]", "", bodies.FAILURE_TEXT.pattern)
    assert not re.search(r"[A-Z]", stripped)


def _alternatives(pattern: str) -> list[str]:
    return [piece for piece, _ in prefilter.pieces(pattern)]


def test_alternatives_split_only_at_top_level() -> None:
    assert _alternatives(r"a|(b|c)|[|]d|\|e") == ["a", "(b|c)", "[|]d", r"\|e"]
    assert _alternatives(r"no alternation") == ["no alternation"]


def test_context_stops_at_the_next_recipients_transcript_lines() -> None:
    # Sendmail's transcripts name the next recipient after a reply code or in a RCPT command.
    text = (
        "554 <a@example.org>... Remote protocol error\n"
        "554 <b@example.org>... 550 Host unknown\n"
        "While talking to mx.example.edu:\n"
        ">>> RCPT To:<c@example.edu>\n"
        "<<< 550 <c@example.edu>... User unknown\n"
    )
    assert bodies.context_for(text, "a@example.org") == "554 <a@example.org>... Remote protocol error"
    assert "User unknown" not in bodies.context_for(text, "b@example.org")
    assert "User unknown" in bodies.context_for(text, "c@example.edu")


def test_without_switches_a_dialect_off_and_back_on() -> None:
    text = "https://support.google.com/mail/?p=ReceivingRate"
    assert rules.reason_for(text, None, None) is Reason.TOOMANYCONN
    with rules.without(["google"]):
        assert rules.reason_for(text, None, None) is Reason.UNDEFINED
    assert rules.reason_for(text, None, None) is Reason.TOOMANYCONN
    with pytest.raises(ValueError, match="no such dialect"), rules.without(["nonesuch"]):
        pass


@pytest.mark.parametrize(
    "text",
    [
        "Sorry your message to a@example.com cannot be delivered. "
        "This account has been disabled or discontinued",
        "550 5.2.1 The email account that you tried to reach is inactive",
        "550 Mailbox suspended",
        "554 delivery error: this is a discontinued account",
        "550 user account is disabled",
    ],
)
def test_a_closed_or_held_account_is_suspend_not_a_dead_address(text: str) -> None:
    # "disabled", "discontinued", "inactive" and "suspended" say the owner's account is on
    # hold or closed by the provider, not that the address never existed: suspend, temporary.
    reason = rules.reason_for(text, "5.0.0", 550)
    assert reason is Reason.SUSPEND
    assert _kind(reason, BounceKind.PERMANENT) is BounceKind.TEMPORARY


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # A gateway with no route to the domain's mail system today: nothing about the address.
        ("Routing: Could not find a gateway for someone@example.net", Reason.NETWORKERROR),
        (
            "The following mail has been returned because it encountered an error while being processed.",
            Reason.SYSTEMERROR,
        ),
    ],
)
def test_a_transient_fault_of_the_path_is_read_as_such(text: str, reason: Reason) -> None:
    assert rules.reason_for(text, None, None) is reason
    assert _kind(reason, BounceKind.UNKNOWN) is BounceKind.TEMPORARY
