"""The bounce as every triage stage reads it: the bytes parsed once (core.mime, no stdlib parse), one walk
over the MIME tree sorting its parts, each part's text decoded once, and the views the stages share (the
bounce's own headers, the human-readable report, its loop signals, its own addresses).

Nothing here decides what the message is; core.classify does, from this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bouncekeeper.core import dsn, loops, mime
from bouncekeeper.core.addresses import normalise
from bouncekeeper.core.limits import MAX_PARSE_BYTES, MAX_REPORT_CHARS, MAX_TEXT_CHARS, note
from bouncekeeper.core.rules import bodies, exchange

# The bounce's own header fields that name the reporting daemon and the original sender.
_OWN_FIELDS = ("from", "to", "sender", "reply-to", "return-path")


@dataclass
class Message:
    """What one walk over the MIME tree found; the stages only read this."""

    message: mime.Part
    data: bytes  # the bytes parsed (cut and cleaned as prepare() does): flufl.bounce reads them again
    envelope_sender: str | None = None
    dsn_parts: list[mime.Part] = field(default_factory=list)
    feedback: bool = False  # an RFC 5965 feedback-report part, or an Outlook.com (JMRP) complaint
    text_parts: list[mime.Part] = field(default_factory=list)
    html_parts: list[mime.Part] = field(default_factory=list)
    original_headers: list[str] = field(default_factory=list)
    original_ids: list[str] = field(default_factory=list)
    returned: list[mime.Part] = field(default_factory=list)  # the returned messages (message/rfc822)
    texts: dict[int, str] = field(default_factory=dict)
    report_type: str | None = None  # a multipart/report's report-type, lower case
    signals: tuple[str, ...] = ()  # loops.signals of the bounce itself
    _human: str | None = None

    def text(self, part: mime.Part) -> str:
        """A part's decoded text, decoded once however many stages read it."""
        key = id(part)
        if key not in self.texts:
            self.texts[key] = part.text()
        return self.texts[key]

    def header(self, name: str) -> str | None:
        """The first `name` header of the bounce itself, as text."""
        text = self.message.get(name)
        # Google writes a UTF-8 failed recipient as an RFC 2047 encoded word in X-Failed-Recipients
        # (not allowed in an address by RFC 2047 section 5, but it is what arrives); decode it so the
        # RFC 6531 address is read like any other.
        if text is not None and name in {"subject", "x-failed-recipients"} and "=?" in text:
            text = _decode_words(text)
        return text

    def human_text(self) -> str:
        """The human-readable report, cut before the returned original message; built once."""
        if self._human is None:
            self._human = _human_text(self)
        return self._human

    def full_text(self) -> str:
        """Every text part, uncut (the returned original included), for position checks."""
        pieces = [self.text(part) for part in self.text_parts[:8]]
        return bodies.unix_newlines("\n".join(pieces)[: MAX_TEXT_CHARS * 4])

    def own_addresses(self, names: tuple[str, ...] = _OWN_FIELDS) -> set[str]:
        """The bounce's own From/To: the reporting daemon and the original sender, rarely a failed
        recipient. (Delivered-To / X-Original-To are left out: they are the bounce address.)"""
        own: set[str] = set()
        for name in names:
            value = self.header(name)
            if value:
                for piece in value.split(","):
                    address = normalise(piece)
                    if address:
                        own.add(address)
        if self.envelope_sender:
            address = normalise(self.envelope_sender)
            if address:
                own.add(address)
        return own

    def bounce_subject_or_sender(self) -> bool:
        """A bounce subject ("Undelivered Mail Returned to Sender") or a mailer-daemon From."""
        subject = self.header("subject") or ""
        sender = normalise(self.header("from") or "") or ""
        return bool(
            loops.BOUNCE_SUBJECT.search(subject) or loops.BOUNCE_SENDER_LOCAL.match(sender.partition("@")[0])
        )

    def looks_like_bounce(self) -> bool:
        """A bounce subject or sender, a null envelope sender, a MAILER-DAEMON Return-Path (Sendmail's
        envelope sender for its own reports), or a multipart/report of report-type delivery-status
        (RFC 6522: the structure says it is a delivery report, whatever its language or its From)."""
        return (
            self.bounce_subject_or_sender()
            or "null-sender" in self.signals
            or "multipart-report:delivery-status" in self.signals
            or bool(loops.BOUNCE_SENDER_LOCAL.match(self._return_path_local()))
        )

    def _return_path_local(self) -> str:
        return_path = normalise(self.header("return-path") or "") or ""
        return return_path.partition("@")[0]

    def original_message_id(self) -> str | None:
        """The Message-ID of the message the bounce returns or quotes, when it names one."""
        for value in self.original_ids:
            found = dsn.message_id_in(f"Message-ID: {value}")
            if found:
                return found
        for text in self.original_headers:
            found = dsn.message_id_in(text)
            if found:
                return found
        # Plain-text bounces quote the original's headers in their body; the bounce's own Message-ID is a
        # header, never a body line, so the first Message-ID line of a text part is the original's.
        for part in self.text_parts:
            found = dsn.message_id_in(self.text(part))
            if found:
                return found
        return None


def is_own_address(address: str) -> bool:
    """A reporting daemon's address (mailer-daemon@, postmaster@ ...): never a failed recipient."""
    local = address.partition("@")[0]
    return bool(loops.DAEMON_LOCAL.match(local))


def prepare(raw: bytes, limits: list[str]) -> bytes:
    """The bytes the stages read: at most MAX_PARSE_BYTES, leading blank lines and CR-only line ends
    mended."""
    data = raw
    if len(data) > MAX_PARSE_BYTES:
        data = data[:MAX_PARSE_BYTES]
        note(limits, "bytes")
    # Blank lines before the header (a paste or mbox artefact seen in real samples) would make the
    # whole message a body with no headers.
    data = data.lstrip(b" \t\r\n")
    if b"\r" in data and b"\n" not in data:
        # Old Mac line ends (CR only): the stdlib parser copes, but flufl.bounce's line-based
        # detectors and our own do not. LF is what every stage expects.
        data = data.replace(b"\r", b"\n")
    return data


def read(data: bytes, limits: list[str], envelope_sender: str | None) -> Message:
    """The one parse of a message's (prepared) bytes, walked once, with its loop signals."""
    root = mime.parse(data, limits)
    msg = Message(root, data, envelope_sender)
    _collect(root, msg, top=True)
    if not msg.dsn_parts:
        # Some MTAs label the delivery-status part text/plain; a part that reads as one is one.
        for part in msg.text_parts:
            text = msg.text(part)
            # "inal-" / "INAL-": a cheap case-sensitive test before the case-blind line scans.
            if ("inal-" in text or "INAL-" in text) and _DSN_FIELDS.search(text) and _DSN_ACTION.search(text):
                msg.dsn_parts.append(part)
    if root.get(exchange.JMRP_HEADER):
        msg.feedback = True  # an Outlook.com complaint that carries the header itself
    ctype = root.content_type
    if ctype == "multipart/report":
        msg.report_type = root.params.get("report-type", "").lower()
    msg.signals = loops.signals(
        msg.header, content_type=ctype, report_type=msg.report_type, envelope_sender=envelope_sender
    )
    return msg


_DSN_FIELDS = re.compile(r"^\s*Final-Recipient\s*:", re.IGNORECASE | re.MULTILINE)
_DSN_ACTION = re.compile(r"^\s*(?:Action|Status)\s*:", re.IGNORECASE | re.MULTILINE)


def _collect(part: mime.Part, msg: Message, *, top: bool = False) -> None:
    """File a leaf part under what it is to the stages (a MIME tree's leaves, in order)."""
    if part.children:
        for child in part.children:
            _collect(child, msg)
        return
    ctype = part.content_type
    if part.maintype == "multipart":
        # A multipart whose boundary never occurs: read it as text rather than lose the report inside it.
        msg.text_parts.append(part)
    elif ctype in dsn.DSN_TYPES:
        msg.dsn_parts.append(part)
    elif ctype == "message/feedback-report":
        msg.feedback = True
    elif ctype in dsn.MESSAGE_TYPES and part.enclosed is not None:
        _collect_returned(part.enclosed, msg, top=top)
    elif ctype in dsn.HEADERS_TYPES:
        msg.original_headers.append(msg.text(part))
    elif ctype in ("text/plain", "text/html") and part.filename is None:
        (msg.text_parts if ctype == "text/plain" else msg.html_parts).append(part)


def _collect_returned(inner: mime.Part, msg: Message, *, top: bool) -> None:
    """An enclosed message (message/rfc822): the returned original, or a forwarded report."""
    if not top and not msg.dsn_parts and inner.content_type == "multipart/report":
        # A bounce forwarded as an attachment (some gateways wrap the DSN they received): read the
        # inner report when the outer message has none of its own.
        _collect(inner, msg)
        return
    value = inner.get("message-id")
    if value is not None:
        msg.original_ids.append(value)
    msg.returned.append(inner)
    if inner.get(exchange.JMRP_HEADER) is not None:
        msg.feedback = True  # an Outlook.com complaint, the message complained about attached


def _human_text(msg: Message) -> str:
    pieces: list[str] = []
    for part in msg.text_parts:
        if part in msg.dsn_parts and len(msg.text_parts) > 1:
            continue
        pieces.append(msg.text(part))
        if sum(len(p) for p in pieces) > MAX_REPORT_CHARS:
            break
    if not pieces:
        for part in msg.html_parts:
            pieces.append(bodies.strip_html(msg.text(part)))
    text = "\n".join(pieces)[:MAX_REPORT_CHARS]
    return bodies.cut_original(bodies.unix_newlines(text))


def _decode_words(text: str) -> str:
    """RFC 2047 encoded-words to text; undecodable pieces are kept as they came."""
    # Imported only for the few headers with encoded words: the email package costs a short command's
    # start-up more than our own MIME reader does.
    import email.errors  # noqa: PLC0415
    import email.header  # noqa: PLC0415

    pieces = []
    try:
        chunks = email.header.decode_header(text)
    except (email.errors.HeaderParseError, ValueError):  # a broken base64 encoded-word
        return text
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            try:
                pieces.append(chunk.decode(charset or "ascii", errors="replace"))
            except LookupError:
                pieces.append(chunk.decode("latin-1"))
        else:
            pieces.append(chunk)
    return "".join(pieces)
