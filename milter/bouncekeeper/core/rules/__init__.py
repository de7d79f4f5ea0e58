"""Our own rules: data tables of provider and MTA texts -> reason, one dialect per module.

`reason_for` applies, in order: each dialect's table (provider texts are the most specific), the STRONG
generic phrases, a specific RFC 3463 status code, the ADDRESS phrases, the WEAK phrases, a generic status
code, and finally the SMTP reply code. The first hit wins, as in flufl.bounce's ordered detector list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bouncekeeper.core.model import Reason
from bouncekeeper.core.rules import (
    amazonses,
    aol,
    exchange,
    exim,
    fml,
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
DIALECTS = (google, exchange, yahoo, aol, gmx, mailru, amazonses, qmail, exim, postfix, sendmail, fml)

# All rows in priority order: provider dialects, then the generic STRONG, ADDRESS and WEAK tiers. Each
# row's regex runs only when the text contains one of the row's literals (derived by
# rules.prefilter from the regex itself): finding which rows qualify is one substring test per literal
# and a dictionary lookup, instead of a regex scan per row (benchmarks/classify_speed.py).
_TIER_STRENGTH = {"dialect": 3, "strong": 3, "address": 2, "weak": 1}


@dataclass(frozen=True, slots=True)
class _Row:
    reason: Reason
    pattern: re.Pattern[str]
    tier: str


def _rows() -> tuple[list[_Row], dict[str, list[int]], list[int]]:
    tiers = (
        ("dialect", tuple(row for module in DIALECTS for row in module.PATTERNS)),
        ("strong", generic.STRONG),
        ("address", generic.ADDRESS),
        ("weak", generic.WEAK),
    )
    rows: list[_Row] = []
    by_literal: dict[str, list[int]] = {}
    always: list[int] = []
    for tier, table in tiers:
        for reason, whole in table:
            # A row "a|b|c" is the rows "a", "b", "c" in a row (same reason, same tier: the same first
            # hit): each piece gets its own, more selective, literals and a cheaper regex.
            for source in prefilter.alternatives(whole):
                index = len(rows)
                # No IGNORECASE: explain() lower-cases the text once, and the tables are written in lower
                # case (tests/core/test_rules.py checks it); a case-blind regex is about twice as slow.
                rows.append(_Row(reason, re.compile(source), tier))
                literals = prefilter.literals(source)
                if literals is None:
                    always.append(index)
                for literal in literals or ():
                    by_literal.setdefault(literal, []).append(index)
    return rows, by_literal, always


_ROWS, _BY_LITERAL, _ALWAYS = _rows()
# Two phases: the rows that outrank a specific status code (dialect, STRONG) and those it outranks
# (ADDRESS, WEAK). A report with a specific code and no strong phrase never scans the second phase's
# literals.
_FIRST = frozenset(i for i, row in enumerate(_ROWS) if row.tier in ("dialect", "strong"))
_PHASES: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...] = tuple(
    (
        tuple(sorted(lit for lit, rows in _BY_LITERAL.items() if any((r in _FIRST) is first for r in rows))),
        tuple(i for i in _ALWAYS if (i in _FIRST) is first),
    )
    for first in (True, False)
)


# An address names a mailbox, not a reason: its words must not read as one ("refused@refused.test" as a
# refusal, "<policy@example.org>" as a policy block). A real Exim 4.96 delay warning holds no diagnostic,
# only the address (tests/fixtures/mta/exim-refused-delay.eml), so the whole report is read and the address
# alone decided. The domain stops before trailing dots, so Sendmail's "<a@b.test>... User unknown" keeps
# its "...".
_ADDRESS = re.compile(r"[^\s<>\"'(),;:@\[\]]+@[\w-]+(?:\.[\w-]+)+")
_NO_ADDRESS = "x@x"


# Provider texts that name a dead mailbox whatever SMTP command they answered (a dialect's optional
# DEAD_AT_ANY_STAGE): classify's stage policy reads "user unknown" after DATA as a content filter's words,
# except for these.
_DEAD_AT_ANY_STAGE = re.compile(
    "|".join(source for module in DIALECTS for source in getattr(module, "DEAD_AT_ANY_STAGE", ())) or r"(?!)"
)


def dead_at_any_stage(text: str) -> bool:
    """Whether a provider's own words say the mailbox does not exist, at whatever stage it refused."""
    return _DEAD_AT_ANY_STAGE.search(" ".join(text.split()).lower()) is not None


def reason_for(text: str, status_code: str | None, reply_code: int | None) -> Reason:
    """The reason a failure happened, from its diagnostic text and codes."""
    return explain(text, status_code, reply_code)[0]


def _first_hit(text: str, phase: int) -> _Row | None:
    literals, always = _PHASES[phase]
    candidates = set(always)
    for literal in filter(text.__contains__, literals):  # C-level scan: no bytecode per absent literal
        candidates.update(_BY_LITERAL[literal])
    for index in sorted(candidates):
        if (index in _FIRST) is (phase == 0) and _ROWS[index].pattern.search(text):
            return _ROWS[index]
    return None


def explain(text: str, status_code: str | None, reply_code: int | None) -> tuple[Reason, int]:
    """The reason and how sure: 3 a provider or STRONG phrase, 2 a specific status code or an ADDRESS
    phrase, 1 a WEAK phrase or a generic code, 0 nothing.

    Order: dialect and STRONG rows, a specific RFC 3463 code, ADDRESS rows, WEAK rows, a generic code,
    the SMTP reply code. The first hit wins.
    """
    text = " ".join(text.split()).lower()  # one line: MTAs wrap diagnostics anywhere
    if "@" in text:
        text = _ADDRESS.sub(_NO_ADDRESS, text)
    row = _first_hit(text, 0)
    if row is not None:
        return row.reason, _TIER_STRENGTH[row.tier]
    specific = status.specific(status_code)
    if specific is not None:
        return specific, 2
    row = _first_hit(text, 1)
    if row is not None:
        return row.reason, _TIER_STRENGTH[row.tier]
    found = status.generic(status_code)
    if found is not None:
        return found, 1
    if reply_code is not None:
        reason = status.REPLY_CODES.get(reply_code, Reason.UNDEFINED)
        return reason, 0 if reason is Reason.UNDEFINED else 1
    return Reason.UNDEFINED, 0
