"""`Triaged`: one triage for several VERP recipients gives exactly what `classify` gives for each.

A differential test over every real message in tests/fixtures (provenance in each folder's PROVENANCE.md
or README), with the VERP recipients that matter: none, each failed recipient the message names, a
recipient it does not name, and one that is not an address.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

import pytest

from bouncekeeper.core.classify import Triaged, classify
from bouncekeeper.core.model import Classification

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
MESSAGES = sorted(p for p in FIXTURES.rglob("*.eml") if p.is_file())


def classify_each(
    raw: bytes, verp_recipients: Iterable[str | None], *, envelope_sender: str | None = None
) -> dict[str | None, Classification]:
    """`classify` for each VERP recipient (duplicates once), from one triage: what service.bounces does."""
    triaged = Triaged(raw, envelope_sender=envelope_sender)
    return {v: triaged.for_verp(v) for v in dict.fromkeys(verp_recipients)}


def test_there_are_messages_to_compare() -> None:
    assert len(MESSAGES) > 100


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_one_triage_gives_what_classify_gives_for_each_recipient(path: pathlib.Path) -> None:
    raw = path.read_bytes()
    plain = classify(raw)
    recipients: list[str | None] = [None, "stranger@example.com", "not an address"]
    recipients += [f.recipient for f in plain.failures + plain.delays]
    each = classify_each(raw, recipients + recipients)  # duplicates collapse
    assert list(each) == list(dict.fromkeys(recipients))
    for verp_recipient in recipients:
        assert each[verp_recipient] == classify(raw, verp_recipient=verp_recipient), verp_recipient


def test_the_same_envelope_sender_is_used_for_every_recipient() -> None:
    raw = (FIXTURES / "lmtp" / "lhost-postfix-30.eml").read_bytes()
    each = classify_each(raw, [None, "kijitora@example.br"], envelope_sender="mailer-daemon@example.jp")
    assert each[None] == classify(raw, envelope_sender="mailer-daemon@example.jp")
    assert each["kijitora@example.br"] == classify(
        raw, verp_recipient="kijitora@example.br", envelope_sender="mailer-daemon@example.jp"
    )


def test_an_empty_message_and_no_recipients() -> None:
    assert classify_each(b"", ["a@example.org"]) == {
        "a@example.org": classify(b"", verp_recipient="a@example.org")
    }
    assert classify_each(b"Subject: x\n\nhello\n", []) == {}
