"""Our own rules: data tables of provider and MTA texts -> reason, one dialect per module.

`reason_for` applies, in order: each dialect's table (provider texts are the most specific), the STRONG
generic phrases, a specific RFC 3463 status code, the ADDRESS phrases, the WEAK phrases, a generic status
code, and finally the SMTP reply code. The first hit wins, as in flufl.bounce's ordered detector list.
"""

from __future__ import annotations

import re

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
    prefilter,
    qmail,
    sendmail,
    status,
    yahoo,
)

# Priority order of the dialect tables. Each module exports PATTERNS: tuple[tuple[Reason, str], ...].
DIALECTS = (google, exchange, yahoo, aol, gmx, mailru, amazonses, qmail, exim, postfix, sendmail)

# A row: the reason, its compiled pattern, and literals of which every match contains at least one (None
# when no such literal can be derived). Matching lower-cases the text once and runs a row's regex only
# when one of its literals is present: a substring test is ~100x cheaper than a regex scan, and most
# rows' literals are absent from most diagnostics (benchmarks/classify_speed.py).
Row = tuple[Reason, re.Pattern[str], frozenset[str] | None]
Table = tuple[Row, ...]


def _compile(rows: tuple[tuple[Reason, str], ...]) -> Table:
    compiled = []
    for reason, pattern in rows:
        literals = prefilter.literals(pattern)
        compiled.append(
            (reason, re.compile(pattern, re.IGNORECASE), frozenset(literals) if literals else None)
        )
    return tuple(compiled)


_DIALECT_TABLE: Table = _compile(tuple(row for module in DIALECTS for row in module.PATTERNS))
_STRONG: Table = _compile(generic.STRONG)
_ADDRESS: Table = _compile(generic.ADDRESS)
_WEAK: Table = _compile(generic.WEAK)
# Every literal of every row: tested once per text, so that each row's check is one set operation.
_LITERALS: tuple[str, ...] = tuple(
    sorted(
        {
            lit
            for table in (_DIALECT_TABLE, _STRONG, _ADDRESS, _WEAK)
            for _, _, lits in table
            for lit in lits or ()
        }
    )
)


def _first(table: Table, text: str, present: frozenset[str]) -> Reason | None:
    """`text` is lower-cased already; `present` holds the literals it contains."""
    for reason, pattern, literals in table:
        if literals is not None and literals.isdisjoint(present):
            continue
        if pattern.search(text):
            return reason
    return None


def reason_for(text: str, status_code: str | None, reply_code: int | None) -> Reason:
    """The reason a failure happened, from its diagnostic text and codes."""
    return explain(text, status_code, reply_code)[0]


def explain(text: str, status_code: str | None, reply_code: int | None) -> tuple[Reason, int]:
    """The reason and how sure: 3 a provider or STRONG phrase, 2 a specific status code or an ADDRESS
    phrase, 1 a WEAK phrase or a generic code, 0 nothing."""
    text = " ".join(text.split()).lower()  # one line: MTAs wrap diagnostics anywhere
    present = frozenset(literal for literal in _LITERALS if literal in text)
    found = _first(_DIALECT_TABLE, text, present) or _first(_STRONG, text, present)
    if found is not None:
        return found, 3
    specific = status.specific(status_code)
    if specific is not None:
        return specific, 2
    found = _first(_ADDRESS, text, present)
    if found is not None:
        return found, 2
    found = _first(_WEAK, text, present) or status.generic(status_code)
    if found is not None:
        return found, 1
    if reply_code is not None:
        reason = status.REPLY_CODES.get(reply_code, Reason.UNDEFINED)
        return reason, 0 if reason is Reason.UNDEFINED else 1
    return Reason.UNDEFINED, 0
