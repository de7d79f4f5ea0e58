from __future__ import annotations

import pytest

from bouncekeeper.core.addresses import normalise


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("rfc822; Alice@Example.ORG", "alice@example.org"),
        (b"<bob@example.com>", "bob@example.com"),
        ("utf-8; j\u00f6rg@b\u00fccher.example", "j\u00f6rg@b\u00fccher.example"),
        ("carol@XN--bcher-kva.example.", "carol@xn--bcher-kva.example"),
        ("utf-8; \U0001f408@example.nyaan.jp", "\U0001f408@example.nyaan.jp"),
        ('"dave"@example.net', "dave@example.net"),
        ('"dave.jones"@example.net', "dave.jones@example.net"),
        # RFC 5321 section 4.1.2: a local part that is no dot-string needs its quotes to be an address.
        ('rfc822; "a..b"@example.org', '"a..b"@example.org'),
        ('<".alice"@example.org>', '".alice"@example.org'),
        ('"john smith"@example.org', '"john smith"@example.org'),
        ("j\u00f6rg@example.org".encode("latin-1"), "j\u00f6rg@example.org"),
    ],
)
def test_normalise_gives_one_canonical_form(raw: str | bytes, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "MAILER-DAEMON",
        "postmaster",
        "rfc822;",
        "a@b",
        b"\xff\xfe",
        # A file or a program an alias delivered to is no recipient (Sendmail's and Exim's local mailers).
        "rfc822; /var/mail/alice@mx.example.org",
        'rfc822; "|/usr/bin/procmail -f-"@mx.example.org',
        "|/usr/local/bin/filter@mx.example.org",
    ],
)
def test_normalise_refuses_what_is_not_an_address(raw: str | bytes) -> None:
    assert normalise(raw) is None
