"""Hostile messages for the classifier (docs/classify-cost.md), shared by
benchmarks/adversarial.py and the tests: messages built to make a parser or a scanner work hard, and
seeded mutations of real bounces (the corpus) for fuzzing.

Every builder takes a size in bytes (about what the message will weigh) and returns the raw message.
"""

from __future__ import annotations

import base64
import pathlib
import random
import re
from collections.abc import Callable, Iterator

from bouncekeeper.core.model import BounceKind, Classification, MessageType, Reason

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "emails"

_BOUNCE_HEAD = (
    b"From: MAILER-DAEMON@mx.example.net\n"
    b"To: app@sender.test\n"
    b"Subject: Undelivered Mail Returned to Sender\n"
    b"Message-ID: <hostile@mx.example.net>\n"
)


def _plain(body: bytes, head: bytes = _BOUNCE_HEAD) -> bytes:
    return head + b"Content-Type: text/plain\n\n" + body


def _report(recipient_blocks: bytes, human: bytes = b"Your message could not be delivered.\n") -> bytes:
    return (
        _BOUNCE_HEAD
        + b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        + b"--B\nContent-Type: text/plain\n\n"
        + human
        + b"\n--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        + recipient_blocks
        + b"\n--B--\n"
    )


def one_line_of_dotted_addresses(size: int) -> bytes:
    """The case that made the reading linear: one line of `x@y.` repeated (184 KB of it took 5.3 s)."""
    return _plain(b"Delivery failed: " + b"x@y." * (size // 4) + b"\n")


def one_line_without_failure_words(size: int) -> bytes:
    """A line of short addresses and nothing else on it; the failure words on the next line (the
    45,900 addresses in 184 KB: each address re-read its line)."""
    return _plain(b"Hello\n" + b"a@b.co " * (size // 7) + b"\nuser unknown\n")


def one_line_of_addresses(size: int) -> bytes:
    """One line of distinct valid addresses beside a failure phrase: each one a candidate recipient."""
    words = (b"u%d@d%d.example.org" % (i, i % 97) for i in range(size // 20))
    return _plain(b"550 user unknown: " + b" ".join(words) + b"\n")


def many_address_lines(size: int) -> bytes:
    """A "following addresses failed" report listing one distinct address per line."""
    lines = b"".join(b"  <u%d@example.org>\n" % i for i in range(size // 20))
    return _plain(b"The following addresses had permanent fatal errors:\n" + lines + b"550 user unknown\n")


def dsn_recipients(size: int) -> bytes:
    """A DSN whose delivery-status part names ~size/150 recipients (20,000 took 2.5 s before the cap)."""
    block = (
        b"Final-Recipient: rfc822; u%d@example.org\nAction: failed\nStatus: 5.0.0\n"
        b"Diagnostic-Code: smtp; 550\n\n"
    )
    blocks = b"".join(block % i for i in range(size // len(block)))
    human = b"".join(b"<u%d@example.org>: host said: 550 no such user\n" % i for i in range(size // 400))
    return _report(blocks, human)


def dsn_repeated_recipient(size: int) -> bytes:
    """One recipient's block repeated (one per MX tried, taken to the extreme)."""
    block = b"Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n\n"
    return _report(block * (size // len(block)))


def long_diagnostic(size: int) -> bytes:
    """A Diagnostic-Code folded over a whole message."""
    text = b"\n ".join([b"550 5.1.1 user unknown x@y.z"] * (size // 30))
    return _report(
        b"Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; "
        + text
        + b"\n"
    )


def long_line(size: int) -> bytes:
    """One line, no line end, in a bounce-looking text."""
    return _plain(b"Delivery to a@example.org failed: " + b"A" * size)


def long_header_line(size: int) -> bytes:
    """A header block that is one line."""
    return b"Subject: " + b"x" * size + b"\nFrom: MAILER-DAEMON@mx.example.net\n\nbody\n"


def deep_nesting(size: int) -> bytes:
    """multipart inside multipart, as deep as the size allows."""
    depth = max(1, size // 60)
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(depth)
    )
    tail = b"".join(b"\n--b%d--\n" % i for i in reversed(range(depth)))
    return _BOUNCE_HEAD + head + b"Content-Type: text/plain\n\n550 a@example.org user unknown\n" + tail


def deep_rfc822(size: int) -> bytes:
    """Forwarded reports inside forwarded reports (message/rfc822 holding multipart/report)."""
    depth = max(1, size // 120)
    head = b"".join(
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="r%d"\n\n'
        b"--r%d\nContent-Type: message/rfc822\n\n" % (i, i)
        for i in range(depth)
    )
    return _BOUNCE_HEAD + head + b"Content-Type: text/plain\n\nx\n"


def many_parts(size: int) -> bytes:
    """A flat multipart of small text parts."""
    part = b"--P\nContent-Type: text/plain\n\n550 a@example.org unknown\n"
    return (
        _BOUNCE_HEAD
        + b'Content-Type: multipart/mixed; boundary="P"\n\n'
        + part * (size // len(part))
        + b"--P--\n"
    )


def many_dsn_parts(size: int) -> bytes:
    """A multipart/report with many delivery-status parts."""
    part = (
        b"--P\nContent-Type: message/delivery-status\n\n"
        b"Final-Recipient: rfc822; a@example.org\nAction: failed\n\n"
    )
    return (
        _BOUNCE_HEAD
        + b'Content-Type: multipart/report; report-type=delivery-status; boundary="P"\n\n'
        + part * (size // len(part))
        + b"--P--\n"
    )


def header_flood(size: int) -> bytes:
    """Hundreds of thousands of short header fields."""
    return _BOUNCE_HEAD + b"X-H: v\n" * (size // 7) + b"\n550 a@example.org user unknown\n"


def folded_header_flood(size: int) -> bytes:
    """One header folded over every line."""
    return _BOUNCE_HEAD + b"X-H: v\n" + b" v\n" * (size // 3) + b"\n550 a@example.org user unknown\n"


def encoded_word_soup(size: int) -> bytes:
    """Subject and X-Failed-Recipients made of RFC 2047 encoded words."""
    word = b"=?utf-8?b?" + base64.b64encode("ünknown ".encode()) + b"?= "
    count = size // (2 * len(word))
    return (
        b"From: MAILER-DAEMON@mx.example.net\nSubject: Delivery failure "
        + word * count
        + b"\nX-Failed-Recipients: "
        + b"=?utf-8?q?a=40example.org?= " * (count // 2)
        + b"\nContent-Type: text/plain\n\nfailed\n"
    )


def failed_recipients_header(size: int) -> bytes:
    """X-Failed-Recipients naming ~size/20 addresses, with a report that names none."""
    addresses = b", ".join(b"u%d@example.org" % i for i in range(size // 20))
    return (
        b"From: MAILER-DAEMON@mx.example.net\nSubject: Mail delivery failed\nX-Failed-Recipients: "
        + addresses
        + b"\nContent-Type: text/plain\n\nDie Nachricht konnte nicht zugestellt werden.\n"
    )


def attachment(size: int) -> bytes:
    """A DSN returning a message with a base64 attachment of `size` bytes."""
    data = base64.encodebytes(random.Random(1).randbytes(size * 3 // 4))
    return _report(
        b"Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n",
    ).replace(
        b"\n--B--\n",
        b"\n--B\nContent-Type: message/rfc822\n\nSubject: x\n"
        b'Content-Type: multipart/mixed; boundary="A"\n\n--A\nContent-Type: application/octet-stream\n'
        b"Content-Transfer-Encoding: base64\n\n" + data + b"\n--A--\n\n--B--\n",
    )


def text_attachment(size: int) -> bytes:
    """A plain-text bounce followed by a returned message of `size` bytes of text with addresses."""
    line = b"To: someone@example.org, other@example.org; failed? no. 550 maybe\n"
    return _plain(
        b"Delivery to the following recipient failed permanently:\n\n    a@example.org\n\n"
        b"----- Original message -----\n" + line * (size // len(line))
    )


def html_soup(size: int) -> bytes:
    """An HTML-only bounce of nested tags and entities."""
    chunk = b"<div><b>&amp;</b><br/><p>a@example.org</p></div>  \xc2\xa0 "
    return (
        _BOUNCE_HEAD + b"Content-Type: text/html\n\n<html><body>undeliverable " + chunk * (size // len(chunk))
    )


def sendmail_sessions(size: int) -> bytes:
    """A Sendmail-style transcript with one session per recipient, each named twice."""
    session = (
        b"... while talking to mx%d.example.org.:\n>>> RCPT To:<u%d@example.org>\n"
        b"<<< 550 5.1.1 <u%d@example.org>... User unknown\n"
    )
    names = b"".join(b"<u%d@example.org>... User unknown\n" % i for i in range(size // 200))
    sessions = b"".join(session % (i, i, i) for i in range(size // 200))
    return _plain(b"----- Transcript of session follows -----\n" + names + sessions)


def angle_brackets(size: int) -> bytes:
    """Unbalanced brackets and quotes around an address-looking text."""
    return _plain(b"550 failed " + b'<"' * (size // 4) + b"a@example.org" + b'">' * (size // 4) + b"\n")


def crlf_only(size: int) -> bytes:
    """Old Mac line ends everywhere, many short lines."""
    return _plain(b"550 unknown a@example.org\r" * (size // 27)).replace(b"\n", b"\r")


def blank_lines(size: int) -> bytes:
    """Nothing but line ends after the header."""
    return _plain(b"\n" * size)


def boundary_soup(size: int) -> bytes:
    """A body made of delimiter lines that open no part."""
    return _BOUNCE_HEAD + b'Content-Type: multipart/mixed; boundary="x"\n\n' + b"--x\n" * (size // 4)


def status_soup(size: int) -> bytes:
    """Codes and digits everywhere: the status and reply-code scanners' worst case."""
    return _plain(b"550 5.1.1 4.4.4 " * (size // 16) + b"a@example.org\n")


def transcript_lines(size: int) -> bytes:
    """Many `>>>` / `<<<` lines in one recipient's block."""
    lines = b">>> DATA\n<<< 554 no\n" * (size // 20)
    return _plain(b"a@example.org: 550 user unknown\n" + lines)


BUILDERS: dict[str, Callable[[int], bytes]] = {
    "one_line_of_dotted_addresses": one_line_of_dotted_addresses,
    "one_line_without_failure_words": one_line_without_failure_words,
    "one_line_of_addresses": one_line_of_addresses,
    "many_address_lines": many_address_lines,
    "dsn_recipients": dsn_recipients,
    "dsn_repeated_recipient": dsn_repeated_recipient,
    "long_diagnostic": long_diagnostic,
    "long_line": long_line,
    "long_header_line": long_header_line,
    "deep_nesting": deep_nesting,
    "deep_rfc822": deep_rfc822,
    "many_parts": many_parts,
    "many_dsn_parts": many_dsn_parts,
    "header_flood": header_flood,
    "folded_header_flood": folded_header_flood,
    "encoded_word_soup": encoded_word_soup,
    "failed_recipients_header": failed_recipients_header,
    "attachment": attachment,
    "text_attachment": text_attachment,
    "html_soup": html_soup,
    "sendmail_sessions": sendmail_sessions,
    "angle_brackets": angle_brackets,
    "crlf_only": crlf_only,
    "blank_lines": blank_lines,
    "boundary_soup": boundary_soup,
    "status_soup": status_soup,
    "transcript_lines": transcript_lines,
}


def corpus() -> list[bytes]:
    """The shared corpus's messages (empty when the folder is not there)."""
    return [path.read_bytes() for path in sorted(CORPUS.glob("**/*.eml"))]


_TOKENS = (
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\x00",
    b"\xff\xfe",
    b"@",
    b"<",
    b">",
    b'"',
    b";",
    b"=?utf-8?b?",
    b"?=",
    b"=?iso-2022-jp?q?=1b=24=42",
    b"--",
    b"Content-Type: multipart/report; boundary=",
    b"Content-Type: message/delivery-status\n\n",
    b"Content-Type: message/rfc822\n\n",
    b"Content-Transfer-Encoding: base64\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b'; charset="x-unknown"',
    b"Final-Recipient: rfc822; ",
    b"Action: failed\n",
    b"Status: 5.1.1\n",
    b"Diagnostic-Code: smtp; 550-",
    b"X-Failed-Recipients: ",
    b">>> RCPT To:<",
    b"<<< 550 ",
    b"while talking to ",
    b"\n ",
    "ü@exämple.org".encode(),
    b"\xe9",
)


def mutate(raw: bytes, rng: random.Random) -> bytes:
    """One to four random edits of a message: a byte changed, a slice cut, doubled or moved, a structural
    token inserted, the message truncated."""
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        size = len(data)
        at = rng.randrange(size + 1)
        choice = rng.randrange(7)
        if choice == 0 and size:
            data[min(at, size - 1)] = rng.randrange(256)
        elif choice == 1:
            end = min(size, at + rng.randint(1, 200))
            del data[at:end]
        elif choice == 2:
            end = min(size, at + rng.randint(1, 400))
            data[at:at] = data[at:end] * rng.randint(1, 20)
        elif choice == 3:
            data[at:at] = rng.choice(_TOKENS) * rng.randint(1, 3)
        elif choice == 4:
            del data[at:]
        elif choice == 5 and size:
            start = rng.randrange(size)
            piece = bytes(data[start : start + rng.randint(1, 300)])
            data[at:at] = piece
        else:
            line_end = data.find(b"\n", at)
            if line_end >= 0:
                data[line_end:line_end] = b" " + bytes(rng.choice(_TOKENS))
    return bytes(data)


def mutants(messages: list[bytes], count: int, seed: int) -> Iterator[tuple[int, bytes]]:
    """`count` mutated messages, reproducible from `seed`: (index of the corpus message, mutant)."""
    rng = random.Random(seed)
    for _ in range(count):
        index = rng.randrange(len(messages))
        yield index, mutate(messages[index], rng)


_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def problems(result: Classification) -> list[str]:
    """What is wrong with a classification of any input: an error of our own stages (flufl.bounce's
    exceptions are its own, contained by design), or a field of the wrong type or shape."""
    found = [error for error in result.errors if not error.startswith("flufl:")]
    if not isinstance(result.message_type, MessageType):
        # A wrong type is what this guard is for: the annotations say it cannot happen.
        found.append(f"message_type {result.message_type!r}")  # type: ignore[unreachable]
    if result.failures and result.message_type is not MessageType.BOUNCE:
        found.append(f"failures in a {result.message_type.value}")
    if not all(isinstance(limit, str) and limit for limit in result.limits):
        found.append(f"limits {result.limits!r}")
    for failure in (*result.failures, *result.delays):
        address = failure.recipient
        if not (isinstance(address, str) and "@" in address and address == address.strip()):
            found.append(f"recipient {address!r}")
        elif len(address.encode("utf-8")) > 254 or any(c.isspace() for c in address):
            found.append(f"recipient {address[:80]!r}")
        if not isinstance(failure.kind, BounceKind) or not isinstance(failure.reason, Reason):
            found.append(f"kind/reason {failure.kind!r} {failure.reason!r}")  # type: ignore[unreachable]
        if failure.status is not None and not _STATUS.fullmatch(failure.status):
            found.append(f"status {failure.status!r}")
        if len(failure.diagnostic) > 1000:
            found.append("diagnostic over 1000 characters")
    return found
