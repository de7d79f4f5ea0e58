from __future__ import annotations

import pytest

from bouncekeeper.core.addresses import normalise, rcpt_domain, unsafe


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


@pytest.mark.parametrize(
    "text",
    [
        "al\x00ice@example.org",  # NUL
        "alice\x1b[2J@example.org",  # ESC: a terminal escape in a log line
        "\u202egro.elpmaxe@ecila",  # RIGHT-TO-LEFT OVERRIDE: reads as another address
        "alice\u2066@example.org",  # LEFT-TO-RIGHT ISOLATE
        "alice\u200b@example.org",  # ZERO WIDTH SPACE
        "alice\x85@example.org",  # C1 control (NEL)
        "alice\u2028@example.org",  # LINE SEPARATOR
        "al\udcffice@example.org",  # a byte that was not UTF-8 (surrogateescape)
        "alice@example.org\U000e0041",  # TAG LATIN CAPITAL LETTER A
    ],
)
def test_control_bidi_and_undecodable_characters_are_refused(text: str) -> None:
    assert unsafe(text)
    assert normalise(text) != text.lower()
    assert normalise(text) is None or not unsafe(normalise(text) or "")


@pytest.mark.parametrize(
    "text",
    [
        "alice@example.org",
        "j\u00f6rg@b\u00fccher.example",
        "\u0645\u06cc\u200c\u0631\u0636\u0627@example.ir",  # ZWNJ: allowed in IDNA (RFC 5892)
        "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a",
    ],
)
def test_ordinary_and_international_addresses_are_not_refused(text: str) -> None:
    assert not unsafe(text)
    assert normalise(text) == text.lower()


@pytest.mark.parametrize(
    ("rcpt", "domain"),
    [
        ("<Bounce+x@Bounces.Example.ORG.>", "bounces.example.org"),
        ("bounce+x@bounces.example.org", "bounces.example.org"),
        (" <a@b.example> ", "b.example"),
        ("@odd@c.example", "c.example"),
        ("no-at-sign", "no-at-sign"),
    ],
)
def test_the_domain_of_a_recipient_as_the_mta_hands_it_over(rcpt: str, domain: str) -> None:
    assert rcpt_domain(rcpt) == domain
