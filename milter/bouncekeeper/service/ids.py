"""The ids the store deduplicates by: a delivered message's, an SMTP-time failure's, and a signed VERP
address's (the replay check). Each is a short hash; each must stay what the store already holds, or a
bounce delivered again across an upgrade would count twice."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import secrets

from bouncekeeper.core import verp

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def identity(raw: bytes) -> str:
    """The dedup id of a delivered message: the same bounce delivered again gets the same id.

    A retry re-sends the same queued file, but the receiving MTA may prepend its own trace headers: the
    bounce's Message-ID (set once by the MTA that wrote it) is the identity when present, else the body.
    """
    return identity_from(raw, message_id(raw))


def identity_from(raw: bytes, own_message_id: str) -> str:
    """`identity`, with the message's `message_id` already read."""
    if own_message_id:
        return _short(b"mid\0" + own_message_id.encode("utf-8", "replace"))
    return _short(b"body\0" + _split(raw)[1])


def message_id(raw: bytes) -> str:
    """The message's own Message-ID field, stripped ("" when it has none).

    Read with the stdlib's header parser, not from the core's parse (core.mime): that one unfolds a
    folded value and decodes 8-bit bytes its own way, and the ids made from this must stay the ones the
    store already holds."""
    head = _split(raw)[0]
    # raw_items, not get(): compat32 wraps a value with 8-bit bytes in a Header, which is no string
    # (`strip` raised, and every retry of such a bounce got 451). raw_items gives the first field as
    # get() would, its 8-bit bytes kept as surrogates: UTF-8 ones are read as UTF-8, others as U+FFFD,
    # so the id is stable and the text safe to store. A 7-bit value is the same string get() gave.
    for name, value in _HEADERS.parsebytes(head + b"\n\n").raw_items():
        if name.lower() == "message-id":
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace").strip()
    return ""


def smtp_time_id(own_message_id: str | None, code: int, status: str | None) -> str:
    """The dedup id of an SMTP-time failure: with the failed message's Message-ID, recording the same
    failure again counts once; without one, every report is new."""
    if not own_message_id:
        return secrets.token_hex(8)
    return _short(f"smtp-time\0{own_message_id}\0{code}\0{status}".encode())


def verp_id(checked: verp.VerpResult) -> str:
    """The id of the signed VERP address a bounce came to, for the replay check: its token, or what its
    signature covers (recipient, context and day), hashed to keep the key short."""
    if checked.token is not None:
        return "t." + checked.token
    return _short(f"{checked.day}:{checked.recipient}+{checked.context}".encode())


def _short(basis: bytes) -> str:
    return hashlib.sha256(basis).hexdigest()[:16]


def _split(raw: bytes) -> tuple[bytes, bytes]:
    """The header block and the body, at the first blank line (CRLF line ends when the message has any
    blank CRLF line)."""
    head, _, body = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
    return head, body
