"""Our own rules: data tables of provider and MTA texts -> reason, one dialect per module.

`reason_for` applies, in order: each dialect's table (provider texts are the most specific), the STRONG
generic phrases, a specific RFC 3463 status code, the ADDRESS phrases, the WEAK phrases, a generic status
code, and finally the SMTP reply code. The first hit wins, as in flufl.bounce's ordered detector list.
"""

from __future__ import annotations

import re
from functools import lru_cache

from bouncekeeper.core.model import Reason
from bouncekeeper.core.rules import (
    amazonses,
    aol,
    exchange,
    exim,
    generic,
    gmx,
    google,
    mailru,
    postfix,
    qmail,
    sendmail,
    status,
    yahoo,
)

# Priority order of the dialect tables. Each module exports PATTERNS: tuple[tuple[Reason, str], ...].
DIALECTS = (google, exchange, yahoo, aol, gmx, mailru, amazonses, qmail, exim, postfix, sendmail)

Table = tuple[tuple[Reason, re.Pattern[str]], ...]


def _compile(rows: tuple[tuple[Reason, str], ...]) -> Table:
    return tuple((reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in rows)


_DIALECT_TABLE: Table = _compile(tuple(row for module in DIALECTS for row in module.PATTERNS))
_STRONG: Table = _compile(generic.STRONG)
_ADDRESS: Table = _compile(generic.ADDRESS)
_WEAK: Table = _compile(generic.WEAK)


def _first(table: Table, text: str) -> Reason | None:
    for reason, pattern in table:
        if pattern.search(text):
            return reason
    return None


@lru_cache(maxsize=4096)
def reason_for(text: str, status_code: str | None, reply_code: int | None) -> Reason:
    """The reason a failure happened, from its diagnostic text and codes."""
    return explain(text, status_code, reply_code)[0]


@lru_cache(maxsize=4096)
def explain(text: str, status_code: str | None, reply_code: int | None) -> tuple[Reason, int]:
    """The reason and how sure: 3 a provider or STRONG phrase, 2 a specific status code or an ADDRESS
    phrase, 1 a WEAK phrase or a generic code, 0 nothing."""
    text = " ".join(text.split())  # one line: MTAs wrap diagnostics anywhere
    found = _first(_DIALECT_TABLE, text) or _first(_STRONG, text)
    if found is not None:
        return found, 3
    specific = status.specific(status_code)
    if specific is not None:
        return specific, 2
    found = _first(_ADDRESS, text)
    if found is not None:
        return found, 2
    found = _first(_WEAK, text) or status.generic(status_code)
    if found is not None:
        return found, 1
    if reply_code is not None:
        reason = status.REPLY_CODES.get(reply_code, Reason.UNDEFINED)
        return reason, 0 if reason is Reason.UNDEFINED else 1
    return Reason.UNDEFINED, 0
