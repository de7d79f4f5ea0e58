"""The classifier never raises, whatever the bytes: each stage's failure is contained."""

from __future__ import annotations

import pathlib
from email.utils import getaddresses

import pytest
from flufl.bounce._detectors import yale
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bouncekeeper.core import classify as classify_module
from bouncekeeper.core import dsn
from bouncekeeper.core.classify import classify
from bouncekeeper.core.model import BounceKind, Classification, MessageType

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "bounces"
SEEDS = sorted(FIXTURES.glob("*.eml"))

DSN_HEAD = (
    b"From: MAILER-DAEMON@mx.example.net\r\n"
    b"To: sender@example.org\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\n<alice@example.org>: host mx said: 550 5.1.1 no such user\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
    b"Final-Recipient: rfc822; alice@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 <alice@example.org>: Recipient address rejected: User unknown\r\n"
)


def _is_sane(result: Classification) -> None:
    assert isinstance(result, Classification)
    assert isinstance(result.message_type, MessageType)
    for failure in (*result.failures, *result.delays):
        assert "@" in failure.recipient


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"\x00\xff\xfe garbage",
        b"Subject: \xff\xfe\xfd 8-bit header\n\nbody",
        b"Content-Type: multipart/report; boundary=\n\n--\n--",
        b'Content-Type: multipart/mixed; boundary="x"\n\n--x\nContent-Type: message/rfc822\n\n--x--',
        b"Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822;\nAction:\nStatus: 9.9.9\n",
        b"Content-Type: text/plain; charset=no-such-charset\nContent-Transfer-Encoding: base64\n\n!!!",
        b"From: =?bogus?Q?x?=\nSubject: =?utf-8?B?####?=\n\n",
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: message/delivery-status\n\n" + b"Final-Recipient: rfc822; a@b.example\n" * 5000,
    ],
)
def test_malformed_input_never_raises(raw: bytes) -> None:
    _is_sane(classify(raw))


def test_empty_message_is_unrecognised() -> None:
    assert classify(b"").message_type is MessageType.UNRECOGNISED


def test_cr_only_line_ends_read_like_lf() -> None:
    lf = classify(DSN_HEAD.replace(b"\r\n", b"\n"))
    cr = classify(DSN_HEAD.replace(b"\r\n", b"\r"))
    assert [(f.recipient, f.kind) for f in cr.failures] == [(f.recipient, f.kind) for f in lf.failures]
    assert [f.recipient for f in lf.failures] == ["alice@example.org"]


def test_eight_bit_headers_and_utf8_local_part() -> None:
    raw = DSN_HEAD.replace(b"alice@example.org", "jörg@bücher.example".encode()).replace(
        b"Subject: Undelivered", "Subject: Unzustellbar – Ärger".encode()
    )
    result = classify(raw)
    assert [f.recipient for f in result.failures] == ["jörg@bücher.example"]


def test_huge_message_is_classified_without_reading_all_of_it() -> None:
    attachment = b"--B\r\nContent-Type: message/rfc822\r\n\r\nSubject: big\r\n\r\n" + b"x" * 76 + b"\r\n"
    raw = DSN_HEAD + attachment + (b"y" * 998 + b"\r\n") * 30_000 + b"--B--\r\n"
    assert len(raw) > 30_000_000
    result = classify(raw)
    assert [(f.recipient, f.kind) for f in result.failures] == [("alice@example.org", BounceKind.PERMANENT)]


def test_flufl_raising_is_recorded_and_the_result_still_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(msg: object) -> object:
        raise IndexError("list index out of range")

    monkeypatch.setattr(classify_module, "all_failures", explode)
    # Bounce-shaped, but nothing our own rules can read (an address, but the postmaster's): flufl.bounce
    # is consulted, and raises.
    raw = b"From: MAILER-DAEMON@example.net\nSubject: Undeliverable: hello\n\nask postmaster@example.net\n"
    result = classify(raw)
    assert any(e.startswith("flufl: IndexError") for e in result.errors)
    assert result.message_type is MessageType.UNRECOGNISED


def test_ordinary_mail_never_reaches_flufl(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(msg: object) -> object:
        raise AssertionError("flufl.bounce must not run on ordinary mail")

    monkeypatch.setattr(classify_module, "all_failures", explode)
    result = classify(b"From: someone@example.net\nSubject: lunch\n\nbob@example.com said hello\n")
    assert result.errors == ()
    assert result.message_type is MessageType.UNRECOGNISED


def test_real_flufl_exception_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    # flufl.bounce 6's Yale detector raises IndexError on a message without From: it takes
    # getaddresses([""])[0], and getaddresses returns [] there since CPython 3.11.4 (gh-102988; older
    # 3.11 gave [("", "")]). Give its module that behaviour whatever Python runs the suite, so flufl's
    # own code raises.
    monkeypatch.setattr(yale, "getaddresses", lambda values: [] if values == [""] else getaddresses(values))
    # (The text names an address, or flufl.bounce would not be asked: classify._worth_flufl.)
    raw = b"Subject: Undeliverable: hello\nTo: x@example.org\n\nask postmaster@example.org\n"
    result = classify(raw)
    assert any(e.startswith("flufl: IndexError") for e in result.errors)
    assert result.message_type is MessageType.UNRECOGNISED


def test_a_crash_inside_a_stage_never_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(dsn, "reports", explode)
    result = classify(DSN_HEAD)
    assert any(e.startswith("dsn: RuntimeError") for e in result.errors)
    _is_sane(result)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_any_bytes_never_raise(raw: bytes) -> None:
    _is_sane(classify(raw))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    cut=st.integers(min_value=0, max_value=20_000),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=20_000), st.integers(0, 255)), max_size=20),
)
def test_mangled_real_bounces_never_raise(seed: pathlib.Path, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(seed.read_bytes()[: max(cut, 1)])
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    _is_sane(classify(bytes(data)))


def test_broken_encoded_word_in_subject_is_kept_as_it_came() -> None:
    raw = DSN_HEAD.replace(
        b"Subject: Undelivered Mail Returned to Sender", b"Subject: =?utf-8?b?abcde?= failure"
    )
    result = classify(raw)
    assert result.errors == ()
    assert [f.recipient for f in result.failures] == ["alice@example.org"]


def test_a_crash_in_the_last_stage_is_contained_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # A delivery-status report that lists no recipient reaches the returned-message stage last.
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: a@example.com\nSubject: Undelivered Mail\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nDelivery report unavailable\n\n"
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n--B--\n"
    )

    def explode(*args: object, **kwargs: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(classify_module._Triage, "_returned_recipient", explode)
    result = classify(raw)
    assert result.errors == ("returned: RuntimeError: boom",)
    assert result.loop_signals  # the rest of the result is kept, not replaced by a blank one
    _is_sane(result)
