"""Signed VERP: round trips, tamper detection, expiry, key rotation, MTA case changes, length limits."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bouncekeeper.core import verp
from bouncekeeper.core.verp import Keyring, VerpStatus, VerpTooLong, VerpUnencodable

K1 = b"first-secret-0123456789abcdef"
K2 = b"second-secret-0123456789abcdef"
RING = Keyring.from_secrets([K1])
DOMAIN = "bounce.example.net"
DAY = 20414  # 2025-11-22

# Local parts: RFC 5322 atext (both cases), dots, and non-ASCII letters (RFC 6531).
_LOCAL_CHARS = "abcxyzABCXYZ0189!#$%&'*+-/=?^_`{|}~.äöüßéøñЖжλ漢字"
locals_ = st.text(alphabet=_LOCAL_CHARS, min_size=1, max_size=24)
labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789ü", min_size=1, max_size=10)
domains = st.lists(labels, min_size=1, max_size=3).map(".".join)
recipients = st.builds(lambda local, domain: f"{local}@{domain}", locals_, domains)
contexts = st.one_of(st.just(""), st.from_regex(r"[a-z0-9][a-z0-9._-]{0,8}", fullmatch=True))
days = st.integers(min_value=0, max_value=99_999)


def _decode(address: str, *, today: int = DAY, ring: Keyring = RING, max_age: int = 14) -> verp.VerpResult:
    return verp.decode(address, keyring=ring, bounce_domain=DOMAIN, today=today, max_age_days=max_age)


def _encode_or_skip(recipient: str, *, context: str = "", day: int = DAY, ring: Keyring = RING) -> str:
    try:
        return verp.encode(recipient, keyring=ring, bounce_domain=DOMAIN, day=day, context=context)
    except VerpTooLong:
        assume(False)
        raise


def test_address_has_the_documented_shape_and_signed_data() -> None:
    address = verp.encode("Alice@Example.org", keyring=RING, bounce_domain=DOMAIN, day=DAY)
    key_id = hashlib.sha1(K1).hexdigest()[:2]
    mac = hmac.new(K1, b"20414:alice=example.org", hashlib.sha1).hexdigest()[:10]
    assert address == f"bounces+alice=example.org+20414{key_id}{mac}@bounce.example.net"


def test_context_is_signed_and_carried_after_the_domain() -> None:
    address = verp.encode("alice@example.org", keyring=RING, bounce_domain=DOMAIN, day=DAY, context="news-42")
    mac = hmac.new(K1, b"20414:alice=example.org+news-42", hashlib.sha1).hexdigest()[:10]
    assert address.startswith("bounces+alice=example.org+news-42+20414")
    assert mac in address
    result = _decode(address)
    assert (result.status, result.recipient, result.context) == (
        VerpStatus.VALID,
        "alice@example.org",
        "news-42",
    )


@pytest.mark.parametrize(
    "recipient",
    ["a+b=c@example.org", "x=y+z=w@example.org", "+@example.org", "=@example.org", "t.x=y@example.org"],
)
def test_plus_and_equals_in_the_local_part_round_trip(recipient: str) -> None:
    address = verp.encode(recipient, keyring=RING, bounce_domain=DOMAIN, day=DAY, context="c1")
    result = _decode(address)
    assert (result.status, result.recipient, result.context) == (VerpStatus.VALID, recipient, "c1")


@settings(max_examples=300)
@given(recipients, contexts, days)
def test_any_valid_address_round_trips(recipient: str, context: str, day: int) -> None:
    address = _encode_or_skip(recipient, context=context, day=day)
    result = _decode(address, today=day)
    assert result.status is VerpStatus.VALID
    assert result.recipient == recipient.lower()
    assert result.context == context
    assert result.day == day
    assert result.key_id == RING.signing_key_id
    assert result.token is None


@settings(max_examples=200)
@given(recipients, contexts, st.data())
def test_any_change_of_letter_case_still_decodes(recipient: str, context: str, data: st.DataObject) -> None:
    address = _encode_or_skip(recipient, context=context)
    # Flip the case of any subset of characters whose case round-trips (all ASCII letters do; an MTA that
    # upper-cases "ß" to "SS" changes the address, not its case).
    flips = data.draw(st.lists(st.booleans(), min_size=len(address), max_size=len(address)))
    changed = "".join(
        c.upper() if flip and len(c.upper()) == 1 and c.upper().lower() == c else c
        for c, flip in zip(address, flips, strict=True)
    )
    result = _decode(changed)
    assert result.status is VerpStatus.VALID
    assert result.recipient == recipient.lower()


def test_a_wholly_upper_case_address_decodes() -> None:
    address = verp.encode("bob.smith@example.org", keyring=RING, bounce_domain=DOMAIN, day=DAY)
    assert _decode(address.upper()).recipient == "bob.smith@example.org"


_TAMPER = "abcz019+=.-_@äAZ!~"


@settings(max_examples=400)
@given(recipients, contexts, st.data())
def test_any_tampering_of_any_character_is_detected(
    recipient: str, context: str, data: st.DataObject
) -> None:
    address = _encode_or_skip(recipient, context=context)
    index = data.draw(st.integers(min_value=0, max_value=len(address) - 1))
    how = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    char = data.draw(st.sampled_from(_TAMPER))
    if how == "replace":
        tampered = address[:index] + char + address[index + 1 :]
    elif how == "insert":
        tampered = address[:index] + char + address[index:]
    else:
        tampered = address[:index] + address[index + 1 :]
    # A change of case is not tampering (see above); a dot after the domain names the same domain.
    assume(tampered.lower().rstrip(".") != address.lower().rstrip("."))
    assert _decode(tampered).status is not VerpStatus.VALID


@settings(max_examples=200)
@given(
    st.integers(min_value=1000, max_value=90_000),
    st.integers(min_value=-40, max_value=40),
    st.integers(min_value=0, max_value=30),
)
def test_expiry_and_future_days_are_respected(day: int, offset: int, max_age: int) -> None:
    address = verp.encode("alice@example.org", keyring=RING, bounce_domain=DOMAIN, day=day)
    today = day + offset
    status = _decode(address, today=today, max_age=max_age).status
    if day > today + 1:
        assert status is VerpStatus.FORGED
    elif today - day > max_age:
        assert status is VerpStatus.EXPIRED
    else:
        assert status is VerpStatus.VALID


def test_expired_address_still_names_its_recipient() -> None:
    address = verp.encode("alice@example.org", keyring=RING, bounce_domain=DOMAIN, day=DAY)
    result = _decode(address, today=DAY + 15)
    assert (result.status, result.recipient, result.day) == (VerpStatus.EXPIRED, "alice@example.org", DAY)
    assert _decode(address, today=DAY + 14).status is VerpStatus.VALID


def test_one_day_of_clock_skew_is_tolerated() -> None:
    address = verp.encode("alice@example.org", keyring=RING, bounce_domain=DOMAIN, day=DAY + 1)
    assert _decode(address).status is VerpStatus.VALID
    address = verp.encode("alice@example.org", keyring=RING, bounce_domain=DOMAIN, day=DAY + 2)
    assert _decode(address).status is VerpStatus.FORGED


@given(recipients)
def test_rotation_first_key_signs_every_key_verifies(recipient: str) -> None:
    old_ring = Keyring.from_secrets([K1])
    new_ring = Keyring.from_secrets([K2, K1])
    old = _encode_or_skip(recipient, ring=old_ring)
    new = _encode_or_skip(recipient, ring=new_ring)
    assert _decode(old, ring=new_ring).status is VerpStatus.VALID
    assert _decode(new, ring=new_ring).status is VerpStatus.VALID
    assert _decode(new, ring=new_ring).key_id == verp.key_id_of(K2)
    # A key that was retired no longer verifies.
    assert _decode(old, ring=Keyring.from_secrets([K2])).status is VerpStatus.FORGED
    assert _decode(new, ring=old_ring).status is VerpStatus.FORGED


def test_keys_sharing_an_id_are_all_tried() -> None:
    ring = Keyring([("ab", K1), ("ab", K2)])
    address = verp.encode("alice@example.org", keyring=Keyring([("ab", K2)]), bounce_domain=DOMAIN, day=DAY)
    assert _decode(address, ring=ring).status is VerpStatus.VALID


@settings(max_examples=100)
@given(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True), days)
def test_token_mode_round_trips(token: str, day: int) -> None:
    address = verp.encode_token(token, keyring=RING, bounce_domain=DOMAIN, day=day)
    assert address.startswith(f"bounces+t.{token}+")
    result = _decode(address, today=day)
    assert (result.status, result.token, result.recipient) == (VerpStatus.VALID, token, None)


@given(recipients, contexts)
def test_too_long_is_raised_exactly_when_the_local_part_exceeds_64_octets(
    recipient: str, context: str
) -> None:
    local, _, domain = recipient.lower().rpartition("@")
    body = f"{local}={domain}" + (f"+{context}" if context else "")
    expected = len(f"bounces+{body}+{DAY}".encode()) + 12
    if expected > 64:
        with pytest.raises(VerpTooLong):
            verp.encode(recipient, keyring=RING, bounce_domain=DOMAIN, day=DAY, context=context)
    else:
        address = verp.encode(recipient, keyring=RING, bounce_domain=DOMAIN, day=DAY, context=context)
        assert len(address.rpartition("@")[0].encode()) == expected


def test_too_long_is_an_unencodable_address() -> None:
    with pytest.raises(VerpUnencodable):
        verp.encode("a" * 60 + "@example.org", keyring=RING, bounce_domain=DOMAIN, day=DAY)


@pytest.mark.parametrize(
    ("recipient", "context"),
    [
        ("no-at-sign", ""),
        ("@example.org", ""),
        ("alice@", ""),
        ('"a b"@example.org', ""),
        ("alice@[192.0.2.1]", ""),
        ("alice@ex+ample.org", ""),
        ("alice@example..org", ""),
        ("alice@example.org", "Upper"),
        ("alice@example.org", "a+b"),
        ("alice@example.org", "a=b"),
        ("alice@example.org", "-lead"),
    ],
)
def test_unusable_recipient_or_context_is_refused(recipient: str, context: str) -> None:
    with pytest.raises(VerpUnencodable):
        verp.encode(recipient, keyring=RING, bounce_domain=DOMAIN, day=DAY, context=context)


@pytest.mark.parametrize(
    "address",
    [
        "alice@example.org",
        "bounces@bounce.example.net",
        "bouncesx+alice=example.org+1@bounce.example.net",
        "bounces+alice=example.org+20414aa0123456789@other.example.net",
        "",
        "not an address",
    ],
)
def test_other_addresses_are_not_verp(address: str) -> None:
    assert _decode(address).status is VerpStatus.NOT_VERP


@pytest.mark.parametrize(
    "local",
    [
        "bounces+",
        "bounces+alice=example.org",
        "bounces+alice=example.org+xyz",
        "bounces++20414aa0123456789",
        "bounces+alice=example.org+020414aa0123456789",
        "bounces+alice=example.org+20414aa0123456789",
    ],
)
def test_our_prefix_with_a_bad_tag_is_forged(local: str) -> None:
    result = _decode(f"{local}@{DOMAIN}")
    assert result == verp.VerpResult(VerpStatus.FORGED)


def test_angle_brackets_and_spaces_around_the_address_are_ignored() -> None:
    address = verp.encode("alice@example.org", keyring=RING, bounce_domain=DOMAIN, day=DAY)
    assert _decode(f" <{address}> ").status is VerpStatus.VALID


def test_custom_prefix_is_used_and_required() -> None:
    address = verp.encode("alice@example.org", keyring=RING, bounce_domain=DOMAIN, day=DAY, prefix="BK")
    assert address.startswith("bk+alice=example.org+")
    assert (
        verp.decode(
            address, keyring=RING, bounce_domain=DOMAIN, today=DAY, max_age_days=14, prefix="bk"
        ).status
        is VerpStatus.VALID
    )
    assert _decode(address).status is VerpStatus.NOT_VERP


def test_keyring_refuses_bad_ids_and_empty_input() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        Keyring([])
    with pytest.raises(ValueError, match="2 lower-case hex"):
        Keyring([("ABC", K1)])
    with pytest.raises(ValueError, match="empty"):
        Keyring([("ab", b"")])


def test_keyring_lists_key_ids_signing_first() -> None:
    ring = Keyring.from_secrets([K2, K1])
    assert ring.key_ids == (verp.key_id_of(K2), verp.key_id_of(K1))
    assert ring.signing_key_id == verp.key_id_of(K2)


def test_a_38_octet_body_fits_and_39_does_not() -> None:
    # docs/verp.md and exim/ promise 38 octets for local=domain with the default prefix until day 99999.
    fits = "a" * (38 - len("=example.org")) + "@example.org"
    assert len(verp.encode(fits, keyring=RING, bounce_domain=DOMAIN, day=99_999).partition("@")[0]) == 64
    with pytest.raises(VerpTooLong):
        verp.encode("a" + fits, keyring=RING, bounce_domain=DOMAIN, day=DAY)
