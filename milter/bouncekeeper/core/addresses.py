"""The one place addresses are parsed, decoded and normalised.

flufl.bounce returns bytes, DSN fields carry an address-type prefix ("rfc822;"), MTAs wrap addresses in
angle brackets, quotes or trailing dots, and RFC 6533 allows UTF-8 local parts. Everything that becomes
a Redis key or a reported recipient passes through `normalise` exactly once.
"""

from __future__ import annotations

import re

from bouncekeeper.core.memo import bounded

# RFC 3464 section 2.3.2 / RFC 6533 section 3: "address-type ; address". We accept the types in use.
_TYPE_PREFIX = re.compile(r"^\s*(?:rfc822|utf-8|x-unix|unknown)\s*;\s*", re.IGNORECASE)
# A bare addr-spec, permissive on the local part (bounces quote whatever the user typed) but requiring a
# dotted-or-bracketed domain so that "postmaster" or "MAILER-DAEMON" alone never count as an address.
_ADDR = re.compile(
    r"""(?P<local>"[^"\r\n]{1,64}"|[^\s<>()\[\],;:@"]{1,64})@(?P<domain>\[[0-9A-Fa-f.:IPv]+\]|[^\s<>()\[\],;:@"'`]+)""",
)
# RFC 5321 section 4.1.2 Dot-string: atoms of atext (RFC 5322 section 3.2.3; RFC 6531 adds UTF-8)
# joined by single dots.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_DOT_STRING = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
# A local delivery to a file or a program ("/var/mail/alice", "|/usr/bin/procmail"; Sendmail's and
# Exim's aliases and .forward files) is what an address expanded to, never a recipient to score.
_NOT_A_MAILBOX = ("/", "|")
_MAX_ADDRESS = 254  # RFC 5321 section 4.5.3.1.3 path limit, minus the angle brackets
# What no address may hold: C0 and C1 controls (NUL, ESC: terminal escapes in a log), the bidi and other
# invisible format characters (U+202E makes "moc.elpmaxe@" read as a different address), line and
# paragraph separators, and lone surrogates (bytes that were not UTF-8, kept by surrogateescape).
# U+200C/U+200D stay allowed: IDNA (RFC 5892 CONTEXTJ) needs them in Persian and Indic names.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b\u200e\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff"
    "\U000110bd\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


def decode(raw: str | bytes) -> str:
    """Text from bytes as flufl.bounce and 8-bit headers give them; never raises."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Latin-1 maps every byte: the address stays recognisable and never crashes the caller.
        return raw.decode("latin-1")


def unsafe(text: str) -> bool:
    """Whether `text` holds a character refused in an address (controls, bidi and format characters,
    undecodable bytes): every adapter refuses such a recipient, and `normalise` never returns one."""
    return _UNSAFE.search(text) is not None


# A message names the same addresses again and again (its From in each stage, a recipient in the
# report, its DSN and its transcript): a third of the calls repeat one of the message's. Small: one
# message's addresses, not a day's.
@bounded(maxsize=256, longest=1024)
def normalise(raw: str | bytes) -> str | None:
    """Return `local@domain` in canonical form, or None when `raw` holds no usable address.

    Canonical form: no type prefix, brackets, quotes around the whole thing or trailing dot; the domain
    lower-cased (DNS is case-insensitive) but otherwise in the form it came in: an A-label stays an
    A-label and a U-label a U-label (RFC 6533 DSNs carry either; the VERP recipient, which is
    authoritative, keeps the form the application used when it sent); the local
    part lower-cased too. RFC 5321 lets the local part be case-sensitive, but no mailbox provider in the
    corpus treats it so, and one address must map to one counter whatever case a bouncing MTA used.
    """
    text = _TYPE_PREFIX.sub("", decode(raw)).strip()
    if not text or len(text) > _MAX_ADDRESS * 2:
        return None
    match = _ADDR.search(text)
    if match is None:
        return None
    local = match.group("local").strip("'`")
    domain = match.group("domain").rstrip(".").strip("'`")
    if local.startswith('"') and local.endswith('"') and _DOT_STRING.fullmatch(local[1:-1]):
        # "alice"@example.org is alice@example.org (RFC 5321 section 4.1.2: a quoted string that is a
        # valid dot-string names the same mailbox). "a..b", "john smith" or ".alice" are not dot-strings:
        # they keep their quotes, without which they are no address.
        local = local[1:-1]
    if not local or not domain or ("." not in domain and not domain.startswith("[")):
        return None
    if local.lstrip('"').startswith(_NOT_A_MAILBOX):
        return None
    domain = domain.lower()
    address = f"{local.lower()}@{domain}"
    if unsafe(address) or len(address.encode("utf-8")) > _MAX_ADDRESS:
        return None
    return address


def domain_of(address: str) -> str:
    """The domain of a normalised address."""
    return address.rpartition("@")[2]


def rcpt_domain(rcpt: str) -> str:
    """The domain of an envelope recipient as an MTA hands it over ("<a@B.example.>", "a@b.example"),
    lower-cased, without brackets, blanks or the root's dot. Cheap, no parsing: for deciding whether a
    recipient is ours before anything else is done with it."""
    return rcpt.rpartition("@")[2].strip("<> \t").rstrip(".").lower()
