"""A small, lenient MIME reader for bounces: headers, the part tree, and decoded text. Never raises.

Why not the stdlib parser: it builds a full object model line by line and costs more per message than
the whole rest of the classifier (benchmarks/classify_speed.py). A bounce needs much less: the top
headers, which parts exist and their types, the decoded text of the few text and delivery-status parts,
and the header block of the returned original. This reader splits on boundaries with bytes.find and
decodes only the parts that are read. flufl.bounce, which needs an email.message.Message, still gets the
stdlib's parse, only when it runs.

RFC 2045/2046 are followed where real bounces do; where they do not (missing closing delimiter,
boundary never found, 8-bit headers, CR-only line ends), the reader keeps what it can: a multipart
whose boundary never occurs is one text leaf, 8-bit header bytes are UTF-8 (RFC 6532) or Latin-1.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

# Work caps (docs/classify-cost.md): nesting, parts and header blocks past these are not read; parse() says so
# in `cut` ("mime", "headers"), which the classifier reports in Classification.limits. Real bounces nest
# three levels and hold a handful of parts; a header block of a real message is a few KiB.
MAX_DEPTH = 8
MAX_PARTS = 256
MAX_HEADER_BYTES = 256 * 1024
MAX_HEADERS = 1000

_FILENAME = re.compile(r'filename\*?\s*=\s*"?([^";]+)', re.IGNORECASE)
_PARAM = re.compile(r';\s*([A-Za-z0-9!#$%&\'*+.^_`{|}~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def decode_bytes(raw: bytes, charset: str | None = None) -> str:
    """Text of some bytes: the declared charset, else UTF-8 (RFC 6532), else Latin-1. Never raises."""
    if charset and charset not in ("us-ascii", "ascii", "utf-8", "utf8"):
        try:
            return raw.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass(eq=False, slots=True)
class Part:
    """One MIME entity. Header names are lower-cased; values unfolded and decoded to text."""

    _fields: list[tuple[str, str]] | None
    body: bytes
    content_type: str = "text/plain"
    params: dict[str, str] = field(default_factory=dict)
    children: list[Part] = field(default_factory=list)
    # For message/rfc822 and message/global: the enclosed message (its headers, and its parts when it is
    # itself a report).
    enclosed: Part | None = None
    _index: dict[str, str] | None = None
    # The header block of a returned original, read only as far as asked: a bounce needs one or two of
    # its fields (Message-ID), and parsing its Received chain was a tenth of the classifier's time.
    _head: str = ""

    @property
    def headers(self) -> list[tuple[str, str]]:
        if self._fields is None:
            self._fields = _fields_of(self._head)
        return self._fields

    def get(self, name: str) -> str | None:
        if self._fields is None:
            return _field_in(self._head, name)
        if self._index is None:
            self._index = {}
            for key, value in self._fields:
                self._index.setdefault(key, value)
        return self._index.get(name)

    @property
    def maintype(self) -> str:
        return self.content_type.partition("/")[0]

    @property
    def is_multipart(self) -> bool:
        return bool(self.children)

    @property
    def filename(self) -> str | None:
        disposition = self.get("content-disposition") or ""
        match = _FILENAME.search(disposition) if "ilename" in disposition else None
        return match.group(1) if match else self.params.get("name")

    def payload_bytes(self) -> bytes:
        """The body with its Content-Transfer-Encoding undone (RFC 2045 section 6); lenient."""
        encoding = (self.get("content-transfer-encoding") or "").strip().lower()
        body = self.body
        if encoding == "base64":
            data = _NOT_BASE64.sub(b"", body)
            data = data[: len(data) - len(data) % 4]
            try:
                return binascii.a2b_base64(data)
            except binascii.Error:
                return body
        if encoding == "quoted-printable":
            return binascii.a2b_qp(body)
        return body

    def text(self) -> str:
        return decode_bytes(self.payload_bytes(), self.params.get("charset", "").lower() or None)

    def walk(self) -> list[Part]:
        found = [self]
        for child in self.children:
            found.extend(child.walk())
        return found


def parse(raw: bytes, cut: list[str] | None = None) -> Part:
    """Parse one message. Never raises. The caps reached are appended to `cut`."""
    budget = _Budget(cut if cut is not None else [])
    return _parse(raw, 0, budget, "text/plain")


class _Budget:
    """The parts parsed so far and the caps reached, shared by one parse's recursion."""

    __slots__ = ("cut", "parts")

    def __init__(self, cut: list[str]) -> None:
        self.parts = 0
        self.cut = cut

    def reached(self, limit: str) -> None:
        if limit not in self.cut:
            self.cut.append(limit)


def content_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type field's type (lower-cased, as written) and its parameters (names lower-cased)."""
    ctype, _, rest = value.partition(";")
    found = _PARAM.findall(";" + rest)
    params = {name.lower(): param.strip('"').replace('\\"', '"') for name, param in found}
    return ctype.strip().lower(), params


def _parse(raw: bytes, depth: int, budget: _Budget, default_type: str) -> Part:
    budget.parts += 1
    if raw[:1] in (b"\n", b"\r"):
        head, body = b"", raw.lstrip(b"\r\n")  # no header at all: the whole entity is body
    else:
        start, end = _header_end(raw)
        head, body = raw[:start], raw[end:]
    headers = _headers(head, budget)
    part = Part(headers, body)
    value = part.get("content-type")
    if value:
        ctype, part.params = content_type(value)
        part.content_type = ctype if "/" in ctype else default_type
    else:
        part.content_type = default_type
    nested = part.maintype == "multipart" or part.content_type in ("message/rfc822", "message/global")
    if nested and (depth >= MAX_DEPTH or budget.parts >= MAX_PARTS):
        budget.reached("mime")
        return part
    if part.maintype == "multipart" and part.params.get("boundary"):
        child_default = "message/rfc822" if part.content_type == "multipart/digest" else "text/plain"
        for chunk in _split(body, part.params["boundary"].encode("utf-8", "replace")):
            if budget.parts >= MAX_PARTS:
                budget.reached("mime")
                break
            part.children.append(_parse(chunk, depth + 1, budget, child_default))
        if part.children:
            part.body = b""
    elif part.content_type in ("message/rfc822", "message/global"):
        encoding = (part.get("content-transfer-encoding") or "").strip().lower()
        inner = part.payload_bytes() if encoding in ("base64", "quoted-printable") else body
        # The returned original: its headers (Message-ID) are all a bounce needs, unless it is itself
        # a report (a forwarded bounce); its own attachments are never read, so never split.
        start, end = _header_end(inner)
        head = inner[:start]
        if b"multipart/report" in head.lower():
            part.enclosed = _parse(inner, depth + 1, budget, "text/plain")
        else:
            part.enclosed = Part(None, inner[end:], _head=_header_text(head, budget))
    return part


def _header_end(raw: bytes) -> tuple[int, int]:
    """Where the header block ends and the body starts: the first blank line (LF or CRLF ends, as the
    regex \r?\n\r?\n would find it), or (len, len) when there is none. Two bytes.find calls: the
    regex tried a match at every byte of the header."""
    lf = raw.find(b"\n\n")
    crlf = raw.find(b"\n\r\n", 0, len(raw) if lf < 0 else lf + 3)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        start, end = crlf, crlf + 3
    elif lf >= 0:
        start, end = lf, lf + 2
    else:
        return len(raw), len(raw)
    if start > 0 and raw[start - 1] == 13:  # a CR before the first LF belongs to the blank line
        start -= 1
    return start, end


_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:[ \t]*(.*(?:\n[ \t].*)*)", re.MULTILINE)
_FOLD = re.compile(r"\n[ \t]+")


def _headers(head: bytes, budget: _Budget | None = None) -> list[tuple[str, str]]:
    """Header fields in order: name lower-cased, value unfolded (RFC 5322 section 2.2.3) and stripped.
    Lines that are neither a field nor a continuation (an mbox "From " line, garbage) are skipped. At
    most MAX_HEADERS fields from the first MAX_HEADER_BYTES bytes."""
    return _fields_of(_header_text(head, budget), budget)


def _header_text(head: bytes, budget: _Budget | None) -> str:
    """A header block as text with LF line ends, cut at MAX_HEADER_BYTES."""
    if len(head) > MAX_HEADER_BYTES:
        head = head[:MAX_HEADER_BYTES]
        if budget is not None:
            budget.reached("headers")
    return decode_bytes(head).replace("\r\n", "\n")


def _fields_of(text: str, budget: _Budget | None = None) -> list[tuple[str, str]]:
    found = _FIELD.findall(text)
    if len(found) > MAX_HEADERS:
        found = found[:MAX_HEADERS]
        if budget is not None:
            budget.reached("headers")
    return [
        (name.lower(), (_FOLD.sub(" ", value) if "\n" in value else value).strip()) for name, value in found
    ]


def _value(raw: str) -> str:
    return (_FOLD.sub(" ", raw) if "\n" in raw else raw).strip()


_NAMED: dict[str, re.Pattern[str]] = {}


def _field_in(text: str, name: str) -> str | None:
    """The first `name` field of a header block, as _fields_of would read it, without reading the rest:
    a line that starts with the name is a field (a continuation starts with a blank). Searched in the
    lower-cased text without IGNORECASE and without "^", so that the regex engine skips to the name's
    first character. Past MAX_HEADERS fields, the parse stops and this search does not: both read at
    most MAX_HEADER_BYTES."""
    lower = text.lower()
    if len(lower) != len(text):  # a character whose lower case is longer: positions would not match
        return next((value for field, value in _fields_of(text) if field == name), None)
    pattern = _NAMED.get(name)
    if pattern is None:
        pattern = re.compile(rf"{re.escape(name)}[ \t]*:[ \t]*(.*(?:\n[ \t].*)*)")
        _NAMED[name] = pattern
    for found in pattern.finditer(lower):
        if found.start() == 0 or lower[found.start() - 1] == "\n":
            return _value(text[found.start(1) : found.end(1)])
    return None


def _split(body: bytes, boundary: bytes) -> Iterator[bytes]:
    """The body parts between `--boundary` delimiter lines (RFC 2046 section 5.1.1), found as they are
    asked for: a caller that stops at MAX_PARTS does not split the rest."""
    delimiter = b"--" + boundary
    start = -1
    position = 0
    while True:
        found = body.find(delimiter, position)
        if found < 0:
            break
        position = found + len(delimiter)
        if found > 0 and body[found - 1 : found] not in (b"\n", b"\r"):
            continue  # not at the start of a line
        line_end = body.find(b"\n", position)
        line_end = len(body) if line_end < 0 else line_end + 1
        if start >= 0:
            end = found
            # The CRLF before a delimiter belongs to the delimiter (RFC 2046 section 5.1.1).
            if body[end - 2 : end] == b"\r\n":
                end -= 2
            elif body[end - 1 : end] in (b"\n", b"\r"):
                end -= 1
            yield body[start:end]
        if body[position : position + 2] == b"--":
            return  # close delimiter
        start = line_end
        position = line_end
    if start >= 0 and start < len(body):
        yield body[start:]  # no close delimiter: the last part runs to the end
