"""Bounded work per message (docs/classify-cost.md): every cap the classifier reaches is named
in Classification.limits, what was read is still classified right, and hostile or mutated input never
breaks the result. Timing is benchmarks/adversarial.py's business; these tests check behaviour only."""

from __future__ import annotations

import pathlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bouncekeeper.core import dsn, failure, mime
from bouncekeeper.core.classify import classify
from bouncekeeper.core.limits import MAX_PARSE_BYTES, MAX_RECIPIENTS
from bouncekeeper.core.model import MessageType
from bouncekeeper.core.rules import bodies, status
from bouncekeeper.ops.classify_command import as_record
from tests.support import hostile_mail

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"


def test_an_ordinary_bounce_reaches_no_limit() -> None:
    raw = (FIXTURES / "mta" / "sendmail-gmailreputation.eml").read_bytes()
    result = classify(raw)
    assert result.is_bounce
    assert result.limits == ()


def test_a_dsn_naming_more_recipients_than_the_cap_keeps_the_first_ones_and_says_so() -> None:
    block = b"Final-Recipient: rfc822; u%d@example.org\nAction: failed\nStatus: 5.1.1\n\n"
    raw = hostile_mail._report(b"".join(block % i for i in range(MAX_RECIPIENTS + 500)))
    result = classify(raw)
    assert result.message_type is MessageType.BOUNCE
    assert result.limits == ("recipients",)
    assert [f.recipient for f in result.failures] == [f"u{i}@example.org" for i in range(MAX_RECIPIENTS)]
    assert {(f.status, f.reason.value) for f in result.failures} == {("5.1.1", "userunknown")}


def test_x_failed_recipients_past_the_cap_is_cut_and_said() -> None:
    result = classify(hostile_mail.failed_recipients_header(20 * (MAX_RECIPIENTS + 100)))
    assert len(result.failures) == MAX_RECIPIENTS
    assert "recipients" in result.limits
    assert result.failures[0].recipient == "u0@example.org"


def test_a_message_longer_than_the_parse_cap_is_read_to_the_cap_and_says_so() -> None:
    head = (FIXTURES / "mta" / "sendmail-gmailreputation.eml").read_bytes()
    result = classify(head + b"\n" + b"x" * MAX_PARSE_BYTES)
    assert result.is_bounce  # the report comes first: cutting the tail loses nothing of it
    assert "bytes" in result.limits


@pytest.mark.parametrize(
    ("build", "limit"),
    [
        (hostile_mail.deep_nesting, "mime"),
        (hostile_mail.deep_rfc822, "mime"),
        (hostile_mail.many_parts, "mime"),
        (hostile_mail.header_flood, "headers"),
        (hostile_mail.long_header_line, "headers"),
        (hostile_mail.one_line_without_failure_words, "addresses"),
        (hostile_mail.dsn_recipients, "recipients"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_each_cap_is_named_in_the_result(build: object, limit: str) -> None:
    assert callable(build)
    result = classify(build(1_000_000))
    assert limit in result.limits
    assert hostile_mail.problems(result) == []


def test_nesting_within_the_cap_is_read_whole() -> None:
    raw = hostile_mail.deep_nesting(60 * (mime.MAX_DEPTH - 2))
    result = classify(raw)
    assert result.limits == ()
    assert [f.recipient for f in result.failures] == ["a@example.org"]


def test_a_delivery_status_part_past_its_cap_lists_the_recipients_before_it() -> None:
    block = "Final-Recipient: rfc822; u{}@example.org\nAction: failed\n\n"
    count = dsn.MAX_CHARS // len(block.format(10_000)) + 10
    report = dsn.read("".join(block.format(10_000 + i) for i in range(count)))
    assert report.cut
    assert 0 < len(report.recipients) < count
    assert (
        report.recipients[-1].final_recipient == f"rfc822; u{10_000 + len(report.recipients) - 1}@example.org"
    )


def test_the_limits_reach_classify_jsonl() -> None:
    record = as_record("m.eml", classify(hostile_mail.deep_nesting(100_000)))
    assert record["limits"] == ["mime"]


# The sender positions find_recipients and only_as_sender skip, as one regular expression over the words
# before an address (what both did before they became one pass). The one-pass reading must agree.
_SENDER_BEFORE = re.compile(
    r"^[\s>*]*(?:from|sender|reply-to|return-path|message-?id|in-reply-to|references|x-sender|resent-from|"
    r"errors-to|list-\w+)\s*:[^:]*$|"
    r"(?:mail from|envelope-from|envelope sender|smtp\.mailfrom|sent by|helo|ehlo|may not follow)"
    r"\s*[:=]?\s*<?\s*$",
    re.IGNORECASE,
)
_WORDS = ("From", "from:", "Sender", "Message-ID", "list-help", "MAIL FROM", "helo", "sent by", "RCPT TO")
_PIECES = st.sampled_from(
    (*_WORDS, "x", ":", "=", "<", " ", "\t", ">", "*", "a", "Reply-To:", "may not follow", "smtp.mailfrom")
)


@given(st.lists(_PIECES, max_size=8).map("".join))
def test_the_one_pass_sender_test_agrees_with_the_expression(before: str) -> None:
    text = before + "a@example.org"
    position = len(before)
    line = bodies._Line(text, text.lower(), position)
    one_pass = line.sender_field_before(position) or bodies._ends_with(
        text, line.start, position, bodies._SENDER_WORDS, ":="
    )
    assert one_pass == bool(_SENDER_BEFORE.search(before))


@given(
    st.lists(
        st.sampled_from([" ", "\t", "<", ">", "(x)", "on Thu, 1 Jan", "x", ",", '"', "<a@b>"]), max_size=6
    )
)
def test_the_alone_after_test_agrees_with_the_expression(pieces: list[str]) -> None:
    after = "".join(pieces)
    text = "a@example.org" + after
    expected = re.fullmatch(r"[\s\"'<>:,.;]*(?:\(.*\)|<[^<>\s]+>|\s+on\s+\w{3},?\s+\d.*)?\s*", after)
    assert bodies._alone_after(text, len("a@example.org"), len(text)) == (expected is not None)


def test_mutated_bounces_classify_without_error() -> None:
    """A few hundred seeded mutations of the repository's own fixtures (benchmarks/adversarial.py --fuzz
    runs 20,000 of the shared corpus's): each gives a well-formed result and no stage error of ours."""
    messages = [path.read_bytes() for path in sorted(FIXTURES.glob("**/*.eml"))]
    assert len(messages) > 100
    bad = []
    for number, (index, raw) in enumerate(hostile_mail.mutants(messages, 300, seed=14)):
        problems = hostile_mail.problems(classify(raw))
        if problems:
            bad.append((number, index, problems))
    assert bad == []


def test_a_stage_error_is_a_problem_the_fuzz_test_would_see(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise IndexError("boom")

    monkeypatch.setattr(dsn, "reports", explode)
    raw = (FIXTURES / "mta" / "sendmail-gmailreputation.eml").read_bytes()
    assert hostile_mail.problems(classify(raw)) != []


# The code scanners with their look-behind moved after the first digit (searched by skipping to a digit):
# what they find must be what the look-behind-first forms found.
_LOOKBEHIND_FIRST = {
    "status": (re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)"), dsn.STATUS_RE),
    "reply": (re.compile(r"(?<![\d.\-])([245][0-5]\d)(?=[\s\-:]|$)"), status._REPLY),
    "code": (re.compile(r"(?<![\d.])(?:[245]\d\d(?![\d.])|[245]\.\d{1,3}\.\d{1,3})"), bodies._CODE),
    "remote": (
        re.compile(r"(?<![\w.])[245]\d\d[ -]+['\"]?([245]\.\d{1,3}\.\d{1,3})\b"),
        failure._REMOTE_REPLY,
    ),
}


@given(st.lists(st.sampled_from(list("245.-0 1x:\n9'a")), max_size=14).map("".join))
def test_the_code_scanners_find_what_the_look_behind_first_forms_found(text: str) -> None:
    for before, after in _LOOKBEHIND_FIRST.values():
        old, new = before.search(text), after.search(text)
        assert (old and (old.span(), old.groups())) == (new and (new.span(), new.groups()))


# Local parts up to the 64-character limit and past it, quoted ones holding "@", and what may border them.
_ADDRESS_PIECES = st.sampled_from(
    ["a", "b.", "@", "x.org", '"', '"q@r"', " ", "\n", "<", ">", "-", "é", "a" * 60, "a" * 63, "=", "\\"]
)


@given(st.lists(_ADDRESS_PIECES, max_size=12).map("".join))
def test_the_address_scan_from_each_at_sign_finds_what_the_pattern_finds(text: str) -> None:
    expected = [match.span() for match in bodies._ADDRESS.finditer(text)]
    assert [match.span() for match in bodies.addresses_in(text)] == expected


_LINE_PIECES = st.sampled_from(
    [
        "\n",
        "\r\n",
        "Received: a\n",
        "received: x\n",
        "X: b\n",
        "-- ",
        "original message follows",
        "> ",
        "a",
        " ",
    ]
)


@given(st.lists(_LINE_PIECES, max_size=10).map("".join), st.integers(min_value=0, max_value=80))
def test_the_line_search_finds_what_the_line_anchored_pattern_finds(text: str, end: int) -> None:
    end = min(end, len(text))
    for pattern, after_newline in (
        (bodies._ORIGINAL_MARKER, bodies._ORIGINAL_MARKER_NL),
        (bodies._EMBEDDED_HEADERS, bodies._EMBEDDED_HEADERS_NL),
    ):
        found = pattern.search(text, 0, end)
        assert bodies._line_search(pattern, after_newline, text, end) == (found.start() if found else -1)
