"""Signed VERP addresses: encode an original recipient into a bounce address, and decode it back.

Shape (Postfix's recipient-delimiter convention, `+`):

    {prefix}+{rcpt_local}={rcpt_domain}[+{context}]+{TAG}@{bounce_domain}
    {prefix}+t.{token}+{TAG}@{bounce_domain}                  (token mode, several recipients)

    bounces+alice=example.org+20414a1b2c3d4e5f6@bounce.example.net

The part between `{prefix}+` and the last `+` is the *body*. TAG = DAY KEYID MAC:

- DAY: days since the Unix epoch (UTC), in decimal, no leading zero (Exim: `${eval:$tod_epoch/86400}`);
- KEYID: 2 lower-case hex characters naming the key that signed;
- MAC: the first 10 lower-case hex characters (40 bits) of HMAC-SHA1(key, "{DAY}:{body}").

The signed data is exactly what the address carries, lower-cased, so any MTA that can lower-case a string
and compute an HMAC can sign: Exim's `${length_10:${hmac{sha1}{KEY}{$1:${lc:$local_part=$domain}}}}`.
Hex is case-insensitive, and the whole address is lower-cased before it is verified, because MTAs lower-case
local parts (Exim does by default): a VERP address survives any change of case.

Parsing goes from the right, because a recipient's local part may contain `+` and `=` but its domain can
contain neither, and the context and the token come from a safe charset without them: the last `+` starts
the TAG, the last `=` ends the recipient's local part, and a `+` after that `=` starts the context.

RFC 5321 section 4.5.3.1.1 limits a local part to 64 octets. The fixed cost is len(prefix) + 19 octets
(26 with "bounces" until day 99999, in the year 2243), which leaves 38 octets for `local=domain[+context]`.
`encode` raises `VerpTooLong` rather than produce a longer address that some MTAs would refuse or
truncate; the milter then falls back to token mode (a short token stored in Redis names the recipients).

The core has no clock: callers pass `day`/`today` (days since the epoch, UTC).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

MAX_LOCAL_OCTETS = 64  # RFC 5321 section 4.5.3.1.1
MAX_ADDRESS_OCTETS = 254  # RFC 5321 section 4.5.3.1.3 (256 for the path, minus the angle brackets)
MAC_HEX = 10  # 40 bits: a forger has to guess online, one bounce per guess
KEY_ID_HEX = 2
# Bounces arrive after the send; a day stamp later than tomorrow cannot come from us (clock skew aside).
MAX_FUTURE_DAYS = 1
TOKEN_MARK = "t."  # noqa: S105 - the token-mode marker in a local part, not a password

_KEY_ID = re.compile(r"[0-9a-f]{2}")
_TAG = re.compile(rf"([1-9][0-9]*|0)([0-9a-f]{{{KEY_ID_HEX}}})([0-9a-f]{{{MAC_HEX}}})")
# Context and token: a safe charset without `+`, `=`, `@` or upper case, so that parsing from the right
# is unambiguous and no MTA rewrites them.
_CONTEXT = re.compile(r"[a-z0-9][a-z0-9._-]*")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9_-]*")
# RFC 5322 atext, dots, and (RFC 6532) any printable non-ASCII character.
_LOCAL_ASCII = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~.")
# A domain (RFC 5321 Domain, or an RFC 6531 U-label form): no `+`, `=`, `@`, brackets or spaces.
_DOMAIN_ASCII = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


class VerpStatus(StrEnum):
    VALID = "valid"
    FORGED = "forged"  # our shape at our domain, but the MAC, key id or day does not check out
    EXPIRED = "expired"  # authentic but older than max_age_days
    NOT_VERP = "not_verp"  # another domain, or a local part without our prefix


class VerpUnencodable(ValueError):
    """The recipient, context or token cannot be carried in a VERP address; use token mode."""


class VerpTooLong(VerpUnencodable):
    """The VERP local part would exceed 64 octets (RFC 5321 section 4.5.3.1.1); use token mode."""


@dataclass(frozen=True)
class VerpResult:
    status: VerpStatus
    # The original recipient (lower case, as carried in the address) when valid or expired, else None.
    recipient: str | None = None
    # The token (token mode) when valid or expired, else None.
    token: str | None = None
    context: str = ""
    day: int | None = None
    key_id: str | None = None


class Keyring:
    """HMAC keys by id. The first key signs; every key verifies, so keys can rotate without a gap."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        for key_id, secret in keys:
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"key id {key_id!r} is not 2 lower-case hex characters")
            if not secret:
                raise ValueError(f"key {key_id} is empty")
        self._keys: tuple[tuple[str, bytes], ...] = tuple(keys)

    @classmethod
    def from_secrets(cls, secrets: Sequence[bytes]) -> Keyring:
        """Key ids derived from the secrets: the first 2 hex characters of SHA-1(secret)."""
        return cls([(key_id_of(secret), secret) for secret in secrets])

    @property
    def signing_key_id(self) -> str:
        return self._keys[0][0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, the signing one first."""
        return tuple(key_id for key_id, _ in self._keys)

    def sign(self, data: str) -> tuple[str, str]:
        """(key id, MAC) of `data` under the signing key."""
        key_id, secret = self._keys[0]
        return key_id, _mac(secret, data)

    def verify(self, key_id: str, data: str, mac: str) -> bool:
        # Two secrets can share a 2-character id (1 in 256): try every key carrying that id.
        ok = False
        for candidate_id, secret in self._keys:
            if candidate_id == key_id:
                # Constant time: no timing oracle on how many MAC characters matched.
                ok = hmac.compare_digest(_mac(secret, data), mac) or ok
        return ok


def key_id_of(secret: bytes) -> str:
    return hashlib.sha1(secret).hexdigest()[:KEY_ID_HEX]  # noqa: S324 - an identifier, not a signature


def signed_data(day: int | str, body: str) -> str:
    """The string the MAC covers: "{day}:{body}", body being the lower-cased text between the `+`s."""
    return f"{day}:{body}"


def encode(  # noqa: PLR0913 - keyword-only: the keyring, domain, day, context, prefix it signs
    recipient: str,
    *,
    keyring: Keyring,
    bounce_domain: str,
    day: int,
    context: str = "",
    prefix: str = "bounces",
) -> str:
    """The signed VERP address for `recipient`; raises VerpUnencodable (VerpTooLong when too long)."""
    local, at, domain = recipient.strip().lower().rpartition("@")
    if not at or not local or not domain:
        raise VerpUnencodable(f"not an address: {recipient!r}")
    if not all(c in _LOCAL_ASCII or _is_wide(c) for c in local):
        raise VerpUnencodable(f"local part not usable in a VERP address: {recipient!r}")
    if (
        not all(c in _DOMAIN_ASCII or _is_wide(c) for c in domain)
        or domain.strip(".-") != domain
        or ".." in domain
    ):
        raise VerpUnencodable(f"domain not usable in a VERP address: {recipient!r}")
    if context and not _CONTEXT.fullmatch(context):
        raise VerpUnencodable(f"context {context!r} is not [a-z0-9][a-z0-9._-]*")
    body = f"{local}={domain}" + (f"+{context}" if context else "")
    return _assemble(body, keyring=keyring, bounce_domain=bounce_domain, day=day, prefix=prefix)


def encode_token(
    token: str, *, keyring: Keyring, bounce_domain: str, day: int, prefix: str = "bounces"
) -> str:
    """The signed VERP address for a token (token mode); raises VerpUnencodable / VerpTooLong."""
    if not _TOKEN.fullmatch(token):
        raise VerpUnencodable(f"token {token!r} is not [a-z0-9][a-z0-9_-]*")
    return _assemble(TOKEN_MARK + token, keyring=keyring, bounce_domain=bounce_domain, day=day, prefix=prefix)


def decode(  # noqa: PLR0911, PLR0913 - keyword-only as encode; a return per VerpStatus check
    address: str,
    *,
    keyring: Keyring,
    bounce_domain: str,
    today: int,
    max_age_days: int,
    prefix: str = "bounces",
) -> VerpResult:
    """Verify and unpack a VERP address, in any letter case. Never raises."""
    text = address.strip().removeprefix("<").removesuffix(">").lower()
    local, at, domain = text.rpartition("@")
    lead = prefix.lower() + "+"
    if not at or domain.rstrip(".") != bounce_domain.lower().rstrip(".") or not local.startswith(lead):
        return VerpResult(VerpStatus.NOT_VERP)
    forged = VerpResult(VerpStatus.FORGED)
    body, plus, tag = local[len(lead) :].rpartition("+")
    match = _TAG.fullmatch(tag)
    if not plus or not body or match is None:
        return forged
    day_text, key_id, mac = match.groups()
    if not keyring.verify(key_id, signed_data(day_text, body), mac):
        return forged
    day = int(day_text)
    if day > today + MAX_FUTURE_DAYS:
        # Signed by us yet dated in the future: a leaked key or a broken clock; either way not trusted.
        return forged
    status = VerpStatus.EXPIRED if today - day > max_age_days else VerpStatus.VALID
    if body.startswith(TOKEN_MARK) and "=" not in body:
        token = body[len(TOKEN_MARK) :]
        if not _TOKEN.fullmatch(token):
            return forged
        return VerpResult(status, token=token, day=day, key_id=key_id)
    rcpt_local, eq, rest = body.rpartition("=")
    rcpt_domain, _, context = rest.partition("+")
    if not eq or not rcpt_local or not rcpt_domain or (context and not _CONTEXT.fullmatch(context)):
        # Only reachable with a valid MAC over a body we never produce: a key used by something else.
        return forged
    return VerpResult(
        status, recipient=f"{rcpt_local}@{rcpt_domain}", context=context, day=day, key_id=key_id
    )


def _assemble(body: str, *, keyring: Keyring, bounce_domain: str, day: int, prefix: str) -> str:
    if day < 0:
        raise ValueError(f"day {day} is before the epoch")
    if not _CONTEXT.fullmatch(prefix.lower()):
        raise ValueError(f"prefix {prefix!r} is not [a-z0-9][a-z0-9._-]*")
    key_id, mac = keyring.sign(signed_data(day, body))
    local = f"{prefix.lower()}+{body}+{day}{key_id}{mac}"
    address = f"{local}@{bounce_domain.lower().rstrip('.')}"
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise VerpTooLong(f"VERP local part would be {len(local.encode('utf-8'))} octets (limit 64)")
    if len(address.encode("utf-8")) > MAX_ADDRESS_OCTETS:
        raise VerpTooLong(f"VERP address would be {len(address.encode('utf-8'))} octets (limit 254)")
    return address


def _is_wide(char: str) -> bool:
    """A non-ASCII character allowed in an RFC 6531 address: printable, not a space."""
    return ord(char) > 127 and char.isprintable() and not char.isspace()


def _mac(secret: bytes, data: str) -> str:
    digest = hmac.new(secret, data.encode("utf-8"), hashlib.sha1).hexdigest()
    return digest[:MAC_HEX]
