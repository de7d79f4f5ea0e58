"""Loop and auto-reply predicates (RFC 3834, Precedence, null sender, multipart/report)."""

from __future__ import annotations

import pytest

from bouncekeeper.core import loops
from bouncekeeper.core.classify import classify
from bouncekeeper.core.model import MessageType


def _getter(headers: dict[str, str]) -> loops.Headers:
    lower = {k.lower(): v for k, v in headers.items()}
    return lower.get


@pytest.mark.parametrize(
    ("headers", "envelope_sender", "expected"),
    [
        ({"Auto-Submitted": "auto-replied"}, None, "auto-submitted:auto-replied"),
        ({"Auto-Submitted": "auto-generated; owner-email=x@y"}, None, "auto-submitted:auto-generated"),
        ({"X-Autoreply": "yes"}, None, "x-autoreply"),
        ({"X-Autorespond": "Out of office"}, None, "x-autorespond"),
        ({"Precedence": "bulk"}, None, "precedence:bulk"),
        ({"Precedence": "junk"}, None, "precedence:junk"),
        ({"List-Id": "<list.example.org>"}, None, "list-id"),
        ({"Subject": "Out of Office: back Monday"}, None, "vacation-subject"),
        ({"Subject": "Automatische Antwort: Urlaub"}, None, "vacation-subject"),
        ({}, "", "null-sender"),
        ({"Return-Path": "<>"}, None, "null-sender"),
    ],
)
def test_signal_is_raised(headers: dict[str, str], envelope_sender: str | None, expected: str) -> None:
    found = loops.signals(
        _getter(headers), content_type="text/plain", report_type=None, envelope_sender=envelope_sender
    )
    assert expected in found


def test_ordinary_mail_raises_no_signal() -> None:
    headers = {"Subject": "Lunch?", "Auto-Submitted": "no", "Precedence": "first-class"}
    assert (
        loops.signals(
            _getter(headers), content_type="text/plain", report_type=None, envelope_sender="a@b.example"
        )
        == ()
    )


def test_multipart_report_is_a_signal() -> None:
    found = loops.signals(
        _getter({}), content_type="multipart/report", report_type="delivery-status", envelope_sender=None
    )
    assert found == ("multipart-report:delivery-status",)


def test_vacation_reply_is_an_autoreply_never_a_failure() -> None:
    raw = (
        b"From: Alice <alice@example.org>\nTo: list-bounces@example.net\nSubject: Out of office\n"
        b"Auto-Submitted: auto-replied\nX-Autoreply: yes\n\n"
        b"I am away until Monday. Mail to bob@example.org is not read;\n"
        b"the address is invalid for urgent mail.\n"
    )
    result = classify(raw)
    assert result.message_type is MessageType.AUTOREPLY
    assert result.failures == ()
    assert "auto-submitted:auto-replied" in result.loop_signals


def test_bounce_marked_auto_replied_is_still_a_bounce() -> None:
    # Postfix and Exim mark their own bounces "Auto-Submitted: auto-replied" (RFC 3834 section 5).
    raw = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\nSubject: Mail delivery failed\n"
        b"Auto-Submitted: auto-replied\n\n"
        b"The following address(es) failed:\n\n  dave@example.com\n    550 5.1.1 unknown user\n"
    )
    result = classify(raw)
    assert result.message_type is MessageType.BOUNCE
    assert [f.recipient for f in result.failures] == ["dave@example.com"]
