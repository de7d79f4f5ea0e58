"""core/mime.py's lenient reader: where a header block ends."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bouncekeeper.core import mime

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")  # RFC 5322 section 2.1, with bare LF line ends as well


@given(st.lists(st.sampled_from([b"\r", b"\n", b"a", b": ", b"\r\n"]), max_size=14).map(b"".join))
def test_the_header_block_ends_at_the_first_blank_line_as_the_expression_finds_it(raw: bytes) -> None:
    found = _BLANK_LINE.search(raw)
    assert mime._header_end(raw) == ((found.start(), found.end()) if found else (len(raw), len(raw)))


def test_a_message_without_a_blank_line_is_all_header() -> None:
    part = mime.parse(b"Subject: x\nFrom: a@b.c")
    assert part.get("from") == "a@b.c"
    assert part.body == b""


_LINES = st.sampled_from(
    [
        "Message-ID: <a@b>",
        "message-id:<c@d>",
        "MESSAGE-ID :x",
        "X-Message-ID: y",
        " folded",
        "\tmore",
        "To: a@b",
        "garbage line",
        "",
        "Subject: message-id: z",
        "Message-IDs: w",
    ]
)


@given(st.lists(_LINES, max_size=8).map("\n".join))
def test_a_returned_header_read_by_name_is_the_field_a_full_parse_finds(text: str) -> None:
    lazy = mime.Part(None, b"", _head=text)
    parsed: dict[str, str] = {}
    for name, value in mime._fields_of(text):
        parsed.setdefault(name, value)
    assert lazy.get("message-id") == parsed.get("message-id")
    assert lazy.headers == mime._fields_of(text)
