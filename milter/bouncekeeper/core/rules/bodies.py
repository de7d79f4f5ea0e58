"""Reading the human-readable part of a bounce: where the report ends, which addresses failed, and the
text that says why for each of them.

Non-standard bounces (qmail, old Sendmail and Exim, appliances, webmail providers) share a shape: a
preamble, then each failed address on a line of its own or beside a failure phrase, then the reason,
then a marker line and the returned original. These helpers read that shape without knowing the MTA.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

from bouncekeeper.core.addresses import normalise
from bouncekeeper.core.limits import note
from bouncekeeper.core.rules import exchange, prefilter, sendmail

# Lines that introduce the returned original message (its addresses must never be taken as failed
# recipients). Families from qmail, Exim, Sendmail, Postfix, Exchange, Notes, Courier, GroupWise, ...
_ORIGINAL_MARKER = re.compile(
    # One way only to match leading blanks (no "[ \t]*...[ \t]*" pair): stripped HTML has long runs
    # of spaces, on which an ambiguous prefix backtracks quadratically.
    r"^[ \t>]*(?:(?:-{2,}|={2,}|\*{2,}|_{2,})[ \t]*)?(?:"
    r"(?:this is a |a )?copy of (?:the |your )?(?:original )?message|"
    r"below this line is a copy|original message follows|original message headers|"
    r"(?:the )?original message(?: was)?(?: attached| is attached| follows| headers)?[ \t]*(?:-{2,}|:|$)|"
    r"returned message|unsent message below|message headers follow|headers of (?:the )?original|"
    r"start of (?:the )?returned|forwarded message|(?:your )?message reads|"
    r"the header of the original|returned mail follows|the text of your message|original text follows|"
    r"begin (?:returned|original)|rfc ?822 headers|here is (?:a copy|your message)|"
    r"the message you sent|the first .{0,20} of the original|content of the original|"
    r"following is a copy)",
    re.MULTILINE,  # applied to ascii_lower(text): case-folded once, not per pattern
)
# The returned original's header block when no marker introduces it.
_EMBEDDED_HEADERS = re.compile(
    r"^(?:Return-Path|Received|DKIM-Signature|Message-I[Dd]|X-Original-To|Delivered-To):[ \t]\S.*\n"
    r"(?:[A-Za-z][\w-]*:|[ \t])",
    re.MULTILINE | re.IGNORECASE,
)


def _after_newline(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """A "^..." MULTILINE pattern as "\n...": it starts with a literal, so the regex engine skips to each
    line end instead of trying the pattern at every character (_line_search)."""
    if not pattern.pattern.startswith("^"):
        raise ValueError(f"not anchored at a line start: {pattern.pattern[:40]!r}")
    return re.compile("\n" + pattern.pattern[1:], pattern.flags)


_ORIGINAL_MARKER_NL = _after_newline(_ORIGINAL_MARKER)
_EMBEDDED_HEADERS_NL = _after_newline(_EMBEDDED_HEADERS)


def _line_search(first: re.Pattern[str], after_newline: re.Pattern[str], text: str, end: int) -> int:
    """Where `first` ("^...", MULTILINE) first matches in text[:end], or -1: at the start, else one past
    the "\n" where `after_newline` (the same pattern after a "\n") matches. cut_original() takes a
    quarter less time so on the corpus's reports."""
    match = first.match(text, 0, end)
    if match is not None:
        return 0
    match = after_newline.search(text, 0, end)
    return -1 if match is None else match.start() + 1


# An RFC 6531 local part may hold any UTF-8; \w covers letters and digits of every script, and the two
# symbol blocks add what real internationalised bounces carry beyond them (emoji: sisimai's 🐈@ test).
# Punctuation stays out, so "宛先：a@b" still starts at "a".
_SYMBOLS = "\u2600-\u27bf\U0001f000-\U0001faff"
# A quoted local part ('"john smith"@example.org', '"a..b"@example.org': RFC 5321 section 4.1.2) is an
# address too, quotes included; core.addresses keeps them where the local part needs them.
_ADDRESS = re.compile(
    rf"""(?:"[^"\r\n\\]{{1,62}}"|(?<![\w.+={_SYMBOLS}-])[\w.!#$%&'*+/=?^`{{|}}~{_SYMBOLS}-]{{1,64}})"""
    r"@(?:[\w-]{1,63}\.)+[a-z\u00a1-\uffff][\w-]{0,62}",
    re.IGNORECASE,
)
_ANGLE_ADDRESS_NEXT = re.compile(r"[ \t]*<([^<>\s@]+@[^<>\s@]+)>")
# Failure language (and SMTP error codes) that makes an address nearby a failed recipient.
FAILURE_TEXT = re.compile(
    r"unknown|no such|not exist|doesn't exist|does not exist|invalid|reject|fail|undeliver|not deliver|"
    r"could not|couldn't|cannot|can't|unable|not found|denied|refused|full|quota|error|permanent|"
    r"bounce|block|disabled|inactive|suspend|not available|unavailable|unrouteable|unroutable|expired|"
    r"not accept|no mailbox|does not like|not valid|spam|too large|too big|exceed|malformed|did not reach|"
    r"(?<![\d.])[45]\d\d(?![\d])|(?<![\d.])[45]\.\d{1,3}\.\d{1,3}|"
    r"unzustellbar|unbekannt|nicht|inexistant|introuvable|non valide|no existe|inesistente",
    # no IGNORECASE: matched against ascii_lower() text
)
_HEADING = re.compile(
    r"(?:following|these|the) (?:e-?mail )?(?:address(?:es|\(es\))?|recipients?|destinations?)|"
    r"(?:could not|couldn't|not be|wasn't able to|was not|unable to) (?:be )?deliver|"
    r"delivery (?:has )?failed|failed recipient|recipient(?:\(s\)|s)?:|undeliverable to|"
    r"permanent (?:fatal )?error|address(?:es)? failed|failure reasons?",
    # no IGNORECASE: matched against ascii_lower() text, several times faster
)
# An address "alone" on its line: only punctuation, an rfc822; type or a repeat in brackets beside it.
_ALONE_BEFORE = re.compile(
    r"[\s\"'<>:*\-•]*(?:(?:failed |intended |original |final )?(?:recipient|address|addressee)"
    r"(?: address)?\s*:\s*[<\"]?)?(?:rfc822;\s*)?",
    re.IGNORECASE,
)
# What may follow an address alone on its line: punctuation, a comment, the address again in brackets,
# Exchange 2003's date (exchange.LISTED_ON). Matched on the rest of the line with its trailing blanks cut
# (_alone_after).
_ALONE_AFTER = re.compile(rf"[\s\"'<>:,.;]*(?:\(.*\)|<[^<>\s]+>|{exchange.LISTED_ON})?")
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail-daemon|mailerdaemon|abuse|noreply|no-reply")
_SENDER_LEAD = re.compile(
    r"(?:sent by|message from|sender(?: address)?|from)\s*:?\s*\n[ \t]*$", re.IGNORECASE
)
_TAG = re.compile(r"<[^>]*>")
_BLANKS = re.compile(r"[ \t\xa0]+")
_MAX_RECIPIENTS = 50
# How many addresses find_recipients examines at most: a report names its failed recipients near its
# start, and 2,000 candidates is far more than any real report holds (the corpus's most is under 60).
MAX_ADDRESSES = 2000


# Human texts of delay warnings (Postfix "delay" notices, Sendmail "Warning: could not send message for
# past 4 hours", Exim "has not yet been delivered ... will continue trying", Exchange "Delivery Status
# Notification (Delay)").
_DELAY_TEXT = re.compile(
    r"will (?:keep|continue) (?:trying|to try|retrying)|will be retried|still trying|"
    r"(?:message|delivery) (?:has been |is )?delayed|delivery delay|not yet been delivered|"
    r"could not send message for past|warning: could not send|no action is required on your part|"
    r"this is a warning message only|will retry|still being retried|retry (?:until|for)|"
    r"delivery attempts will continue|will be tried again|not yet delivered",
)
_DELAY_SCREEN = prefilter.Screened(_DELAY_TEXT)
# Texts that make a report final even when it also talks about retrying ("I'm not going to try again").
_FINAL_TEXT = re.compile(
    r"permanent(?:ly)? (?:error|failure|fatal)|failed permanently|(?:have|i've) given up|giving up|"
    r"not going to try again|will not (?:be retried|try again)|could not be delivered|undeliverable|"
    r"delivery (?:has )?failed|returned to sender|retry timeout exceeded|too long in (?:the )?queue",
)


def reads_as_delay(text: str) -> bool:
    """Whether a diagnostic talks about a delay ("will keep trying"), whatever else it says."""
    return _DELAY_TEXT.search(ascii_lower(text)) is not None  # the pattern is lower-case


def is_delay_notice(text: str) -> bool:
    """Whether a whole report is a delay warning: it talks about retrying and says nothing final."""
    lower = ascii_lower(text)  # the two patterns are lower-case
    return bool(_DELAY_SCREEN.search(lower)) and not _FINAL_TEXT.search(lower)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lower-cased text whose every index is the same as in `text`, so positions found in the result are
    positions in `text`; searching it beats re.IGNORECASE several times over. str.lower() keeps the
    length except for a few characters (U+0130 ...); str.translate does always, but is much slower."""
    lower = text.lower()
    return lower if len(lower) == len(text) else text.translate(_ASCII_LOWER)


def unix_newlines(text: str) -> str:
    """CRLF and CR-only (old Mac) line ends as LF, so that line-anchored patterns work on all three."""
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_html(text: str) -> str:
    text = re.sub(r"(?is)<(script|style).*?</\1>", " ", text)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</li>", "\n", text)
    return _BLANKS.sub(" ", html.unescape(_TAG.sub(" ", text)))


def cut_original(text: str) -> str:
    """The report without the returned original message."""
    cut = _line_search(_ORIGINAL_MARKER, _ORIGINAL_MARKER_NL, ascii_lower(text), len(text))
    if cut < 0:
        cut = len(text)
    headers = _line_search(_EMBEDDED_HEADERS, _EMBEDDED_HEADERS_NL, text, cut)
    if headers > 0:
        cut = headers
    return text[:cut]


def original_section(text: str) -> str | None:
    """The part of a plain-text bounce that quotes the original, for its Message-ID."""
    marker = _ORIGINAL_MARKER.search(ascii_lower(text))
    if marker is not None:
        return text[marker.start() :]
    headers = _EMBEDDED_HEADERS.search(text)
    if headers is not None:
        return text[headers.start() :]
    return None


def context_for(text: str, address: str, raw: str | None = None) -> str:
    """The lines that report on `address`: its line and those after it, up to the next recipient's
    line, or a blank line once a reason has been seen (at most 12 lines, ~1,200 chars)."""
    position = _find(text, address, raw)
    if position < 0:
        return ""
    position = sendmail.own_session(text, position, address)
    start = text.rfind("\n", 0, position) + 1
    first_end = text.find("\n", position)
    if first_end < 0:
        return text[start:].strip()[:1200]
    lines = _block(text[start:first_end], text[first_end + 1 : first_end + 3000], address)
    return "\n".join(lines).strip()[:1200]


def _block(first: str, rest: str, address: str) -> list[str]:
    """The address's line (`first`) and the lines of `rest` that belong to its block: up to another
    recipient's report, another session's transcript or the returned original."""
    lines = [first]
    # A block ends with the remote server's reply (a reply or status code); until one is seen, blank
    # lines inside the block are skipped (Gmail puts "The error that the other server returned was:"
    # two paragraphs below the address).
    seen_reason = _has_code(first)
    blanks = 0
    for line in rest.split("\n", 40):
        if len(lines) >= 12:
            break
        if not line.strip():
            blanks += 1
            if seen_reason or blanks > 2:
                break
            continue
        if "@" in line and not line.lstrip().startswith("<<<"):  # a remote's reply may name anyone
            leading = _LEADING_ADDRESS.match(line)
            if leading and normalise(leading.group(1)) not in (address, None):
                break  # the next recipient's block
        if sendmail.SESSION_LINE.match(line):
            break  # the transcript of another session (Sendmail's)
        # Matched at the line's start only: cheaper than any search for a hint of one first (a
        # case-blind hint search cost six times the match).
        if _ORIGINAL_MARKER.match(ascii_lower(line)):
            break
        lines.append(line)
        seen_reason = seen_reason or _has_code(line)
    return lines


def _has_code(line: str) -> bool:
    """A reply or status code on the line, not counting digits inside addresses."""
    if not _CODE.search(line):
        return False
    return "@" not in line or bool(_CODE.search(_without_addresses(line)))


_CODE = re.compile(r"[245](?<![\d.][245])(?:\d\d(?![\d.])|\.\d{1,3}\.\d{1,3})")  # see dsn.STATUS_RE
# A line that opens another recipient's report: the address first ("<b@c>:", "rfc822; b@c"), or after
# a reply code or a RCPT command, as Sendmail's transcripts write them ("550 <b@c>... User unknown",
# ">>> RCPT To:<b@c>").
_LEADING_ADDRESS = re.compile(
    r"^[\s>*\-\"'<]*(?:rfc822;\s*|[245]\d\d[ -]+<?|(?i:rcpt to):\s*<?)?([^\s@<>\"']+@[^\s<>\"':,;]+)"
)


def _without_addresses(line: str) -> str:
    return _ADDRESS.sub(" ", line)


def _find(text: str, address: str, raw: str | None) -> int:
    lower = text.lower()
    position = lower.find(address)
    if position < 0 and raw:
        bare = normalise(raw)
        candidate = raw.split(";")[-1].strip().strip("<>").lower()
        for needle in (candidate, bare or ""):
            if needle and "@" in needle:
                position = lower.find(needle)
                if position >= 0:
                    break
    if position < 0:
        local = address.partition("@")[0]
        position = lower.find(local + "@") if len(local) > 2 else -1
    return position


# The longest text before an address's "@" that _ADDRESS matches: a 64-character local part, or 62
# quoted characters and their quotes.
_LOCAL_MAX = 64


def addresses_in(text: str) -> Iterator[re.Match[str]]:
    """_ADDRESS.finditer(text), the same matches, searched from each "@" instead of at every character:
    a match holds an "@" at most _LOCAL_MAX characters after its start, so no match starts before
    the next "@" less that. The text between addresses is skipped by str.find, not tried by the
    pattern at each character: the scan takes a third of its former time on the corpus's reports.
    Linear: each search starts at or after the previous match's end."""
    position = 0
    while (at := text.find("@", position)) >= 0:
        match = _ADDRESS.search(text, max(position, at - _LOCAL_MAX - 1))
        if match is None:
            return
        yield match
        position = match.end()


def find_recipients(text: str, *, exclude: set[str], cut: list[str] | None = None) -> list[tuple[str, str]]:
    """Failed recipients of a non-standard bounce and, for each, the text that reports on it. Past
    MAX_ADDRESSES addresses examined the rest of the text is not read, and "addresses" is added to `cut`.

    `exclude` (the bounce's own From/To: the daemon and the original sender) only vetoes addresses
    found beside failure words; an address alone on its line under a "following addresses failed"
    heading, or in "RCPT TO:<...>", is a recipient whoever else it is.

    One pass, linear in the text: what depends on the line (its bounds, its failure words, a header
    field at its start) is computed once per line, and what depends on the words before an address is
    read backwards from the address, never from the line's start (a 184 KB line of 45,900 addresses took
    5.3 s when each address re-read its line: docs/classify-cost.md).
    """
    found: dict[str, str] = {}
    scan = _Scan(text)
    for examined, match in enumerate(addresses_in(text), 1):
        if examined > MAX_ADDRESSES:
            if cut is not None:
                note(cut, "addresses")
            break
        address = scan.failed_recipient(match, found, exclude)
        if address is None:
            continue
        found[address] = context_for(text, address)
        if len(found) >= _MAX_RECIPIENTS:
            break
    return list(found.items())


class _Scan:
    """One find_recipients pass: the text, what holds for the whole of it, and the line being read."""

    __slots__ = ("_any_failure", "heading_seen", "line", "lower", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.lower = ascii_lower(text)  # same indices as `text`; FAILURE_TEXT and _HEADING are in lower case
        self.heading_seen = bool(_HEADING.search(self.lower))
        self._any_failure: bool | None = None
        self.line = _Line(text, self.lower, -1)

    def failed_recipient(self, match: re.Match[str], found: dict[str, str], exclude: set[str]) -> str | None:
        """The address `match` found, when the words around it make it a failed recipient not yet found."""
        text = self.text
        start, end = match.span()
        first_on_line = start >= self.line.end
        if first_on_line:
            self.line = _Line(text, self.lower, start)
        line = self.line
        address = normalise(match.group(0))
        if address is None or address in found or self._not_a_recipient(address, start, end, first_on_line):
            return None
        # Only the line's first address can be alone on it: the words before any other hold the first
        # one's "@".
        alone = first_on_line and _ALONE_BEFORE.fullmatch(text, line.start, start) is not None
        alone = alone and _alone_after(text, end, line.end)
        rcpt_to = _ends_with(text, line.start, start, ("rcpt to",), ":")
        strong = (alone and self.heading_seen) or (rcpt_to and self._failure_anywhere())
        if strong or (address not in exclude and self._failure_near(alone)):
            return address
        return None

    def _not_a_recipient(self, address: str, start: int, end: int, first_on_line: bool) -> bool:
        """A daemon's address, one in a sender's place, or a display name written as an address."""
        text, line = self.text, self.line
        if _DAEMON.fullmatch(address.partition("@")[0]):
            return True
        if line.sender_field_before(start) or _ends_with(text, line.start, start, _SENDER_WORDS, ":="):
            return True
        if (
            first_on_line
            and not text[line.start : start].strip(" \t<\"'")
            and _SENDER_LEAD.search(text, max(0, line.start - 80), line.start)
        ):
            return True  # Exim: "A message sent by\n  <sender@...>\ncould not be delivered ..."
        angle = _ANGLE_ADDRESS_NEXT.match(text, end, line.end)
        # "a@b <c@d>": a display name written as an address; c@d is the address (RFC 5322).
        return angle is not None and normalise(angle.group(1)) != address

    def _failure_anywhere(self) -> bool:
        if self._any_failure is None:
            self._any_failure = FAILURE_TEXT.search(self.lower) is not None
        return self._any_failure

    def _failure_near(self, alone: bool) -> bool:
        """Failure words on the address's line or, for an address alone on its line, just around it."""
        line, lower = self.line, self.lower
        return line.failure_words() or (
            alone
            and (
                FAILURE_TEXT.search(lower, line.end, line.end + 400) is not None
                or FAILURE_TEXT.search(lower, max(0, line.start - 200), line.start) is not None
            )
        )


# Words that name the address beside them as the recipient that failed, in reports with no list of
# failed addresses (flufl.bounce's simple-match table records where each comes from): usa.net's
# "Intended recipient: a@b", hotpop's "Undeliverable Address: a@b", Demon's "addressed to 'a@b'",
# "(Originally addressed to a@b)", Exim's "(generated from a@b)" for an alias it expanded, LSMTP's
# "Error-for: a@b", "Failed Recipient: a@b", Postfix's "(expanded from: <a@b>)".
_NAMED_RECIPIENT = re.compile(
    r"(?:intended recipient|undeliverable address|failed recipient|error-for|originally addressed to|"
    r"generated from|(?<![\w-])addressed to|expanded from)[ \t]*:?[ \t]*[<'\"(]?[ \t]*"
    rf"(?P<address>{_ADDRESS.pattern})",
    re.IGNORECASE,
)


def named_recipients(text: str, *, exclude: set[str]) -> list[tuple[str, str]]:
    """The addresses a report names as its failed recipients in so many words, for a report whose
    layout find_recipients does not know; linear in the text, at most _MAX_RECIPIENTS."""
    found: dict[str, str] = {}
    for match in _NAMED_RECIPIENT.finditer(text):
        address = normalise(match.group("address"))
        if address is None or address in found or address in exclude:
            continue
        found[address] = context_for(text, address)
        if len(found) >= _MAX_RECIPIENTS:
            break
    return list(found.items())


# Addresses in these positions are the sender or a server, not a failed recipient: in the value of a
# sender or reference header field, or after words that name the sender ("MAIL FROM:<", "sent by").
_SENDER_FIELD = re.compile(
    r"[\s>*]*(?:from|sender|reply-to|return-path|message-?id|in-reply-to|references|x-sender|resent-from|"
    r"errors-to|list-\w+)\s*:",
    re.IGNORECASE,
)
_SENDER_WORDS = (
    "mail from",
    "envelope-from",
    "envelope sender",
    "smtp.mailfrom",
    "sent by",
    "helo",
    "ehlo",
    # Exim's "malformed address: <c@d> may not follow a@b": a@b is the header's earlier, valid address.
    "may not follow",
)


class _Line:
    """The line of `text` holding position `at` (none for -1), and what is the same for every address on
    it, computed once."""

    __slots__ = ("_failure", "_field_end", "_name_end", "end", "lower", "start", "text")

    def __init__(self, text: str, lower: str, at: int) -> None:
        self.text, self.lower = text, lower
        if at < 0:
            self.start = self.end = -1
            return
        self.start = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at)
        self.end = len(text) if end < 0 else end
        self._name_end = -1
        self._field_end: int | None = None
        self._failure: bool | None = None

    def sender_field_before(self, position: int) -> bool:
        """Whether the line is a sender or reference header field ("From: ...", "Message-ID: ...") and
        `position` lies in its value (no other colon between the field's and it)."""
        if self._field_end is None:
            field = _SENDER_FIELD.match(self.text, self.start, self.end)
            if field is None:
                self._name_end = self._field_end = -1
            else:
                colon = self.text.find(":", field.end(), self.end)
                # The value ends at the next colon: an address after it is in other words.
                self._name_end = field.end()
                self._field_end = self.end if colon < 0 else colon
        return self._name_end <= position <= self._field_end and self._field_end >= 0

    def failure_words(self) -> bool:
        if self._failure is None:
            self._failure = FAILURE_TEXT.search(self.lower, self.start, self.end) is not None
        return self._failure


def _ends_with(text: str, floor: int, position: int, words: tuple[str, ...], separators: str) -> bool:
    """Whether text[floor:position] ends with one of `words`, a separator, "<" and blanks between them
    (case-blind), read backwards from `position`: "MAIL FROM: <", "RCPT TO:<"."""
    index = _skip_blanks(text, floor, position)
    if index > floor and text[index - 1] == "<":
        index = _skip_blanks(text, floor, index - 1)
    if index > floor and text[index - 1] in separators:
        index = _skip_blanks(text, floor, index - 1)
    longest = max(map(len, words))
    return text[max(floor, index - longest) : index].lower().endswith(words)


def _skip_blanks(text: str, floor: int, index: int) -> int:
    while index > floor and text[index - 1].isspace():
        index -= 1
    return index


def _alone_after(text: str, position: int, line_end: int) -> bool:
    """Whether the rest of the line after an address leaves it alone (_ALONE_AFTER): its trailing blanks
    cut first, which the pattern's own trailing blanks would backtrack over quadratically."""
    end = _skip_blanks(text, position, line_end)
    return _ALONE_AFTER.fullmatch(text, position, end) is not None


# How reports name the command a remote reply answered, in lower case (matched against ascii_lower()
# text). Words may be wrapped onto the next line. Every alternative holds "rcpt", "data", "mail from" or
# "[mail": smtp_command() tests for those first (substring tests are far cheaper than the scan, and most
# diagnostics name no command).
_REPLY_TO_COMMAND = re.compile(
    # Postfix "(in reply to end of DATA command)", "(in reply to RCPT TO command)".
    r"in\s+reply\s+to\s+(?:the\s+)?(?:end\s+of\s+)?(data|rcpt|mail\s+from)\b|"
    # Exim "SMTP error from remote mail server after RCPT TO:", DMA "did not like our RCPT TO:".
    r"(?:after|did\s+not\s+like\s+our)\s+(?:end\s+of\s+)?(data|rcpt|mail\s+from)\b|"
    # qmail "most progress was RCPT TO response", "said 550 for RCPT TO response"; SMTP32 "RCPT TO
    # generated following response"; SendGrid "User Unknown in RCPT TO".
    r"\b(rcpt)\s+to\s+(?:generated\s+following\s+)?response\b|\bin\s+(rcpt)\s+to\b|"
    # Yahoo "User Unknown [RCPT_TO]"; m-FILTER "-------SMTP command" with the command on the next line;
    # X3 "SMTP:RCPT host 192.0.2.1: 553 ...".
    r"\[(rcpt|data|mail)(?:_to|_from)?\]|\bsmtp(?:\s+command)?\s*:?\s*(data|rcpt)\b"
)


def smtp_command(text: str) -> str | None:
    """The SMTP command a remote server rejected, as the report states it: "DATA", "RCPT", "MAIL" or None.

    Postfix writes "(in reply to end of DATA command)", Exim "after RCPT TO:", DMA "did not like our
    RCPT TO:", qmail "most progress was RCPT TO response", Sendmail a ">>> DATA / <<< 550" transcript.
    """
    lower = ascii_lower(text)
    match = None
    if "rcpt" in lower or "data" in lower or "mail from" in lower or "[mail" in lower:
        match = _REPLY_TO_COMMAND.search(lower)
    if match is not None:
        word = next(group for group in match.groups() if group).upper()
        return word.split()[0][:4]
    if ">>>" not in text:
        return None  # no transcript either
    return sendmail.transcript_command(text)


def only_as_sender(text: str, address: str) -> bool:
    """True when every mention of `address` in `text` is in a sender or Message-ID position.

    flufl.bounce's heuristic detectors sometimes return the original's From or Message-ID; a failed
    recipient is mentioned at least once elsewhere.
    """
    lower = text.lower()
    start = lower.find(address)
    if start < 0:
        return False
    line = _Line(lower, lower, -1)
    while start >= 0:
        if start >= line.end:
            line = _Line(lower, lower, start)
        if not (line.sender_field_before(start) or _ends_with(lower, line.start, start, _SENDER_WORDS, ":=")):
            return False
        start = lower.find(address, start + len(address))
    return True
