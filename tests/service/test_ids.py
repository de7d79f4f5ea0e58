"""The dedup ids the store keeps: stable across versions, and safe on any header bytes."""

from __future__ import annotations

import email.parser
import email.policy

import pytest

from bouncekeeper.service import ids

# What identity() read before raw_items: the stdlib's compat32 get(), for the 7-bit values it could read.
_OLD = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@pytest.mark.parametrize(
    "head",
    [
        b"Message-ID: <a@b.example>\n",
        b"message-id:   <spaced@b.example>  \n",
        b"Message-ID: <folded@\n b.example>\n",
        b"Received: x\nMessage-ID: <first@b.example>\nMessage-ID: <second@b.example>\n",
        b"Subject: none\n",
    ],
)
def test_a_7_bit_message_id_is_read_as_before(head: bytes) -> None:
    raw = head + b"\nbody\n"
    before = (_OLD.parsebytes(head + b"\n\n").get("Message-ID") or "").strip()
    assert ids.message_id(raw) == before
    assert ids.identity(raw) == ids.identity_from(raw, before)


def test_an_8_bit_message_id_is_read_not_raised_on() -> None:
    utf8 = b"Message-ID: <caf\xc3\xa9@b.example>\n\nbody\n"
    latin1 = b"Message-ID: <caf\xe9@b.example>\n\nbody\n"
    assert ids.message_id(utf8) == "<café@b.example>"
    assert ids.message_id(latin1) == "<caf\ufffd@b.example>"
    assert ids.identity(utf8) == ids.identity(utf8)
    assert ids.identity(utf8) != ids.identity(latin1)
