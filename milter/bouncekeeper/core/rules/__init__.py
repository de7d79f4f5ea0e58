"""Our own rules: data tables of provider and MTA texts -> reason, one dialect per module.

`reason_for` applies, in order: each dialect's table (provider texts are the most specific), the STRONG
generic phrases, a specific RFC 3463 status code, the ADDRESS phrases, the WEAK phrases, a generic status
code, and finally the SMTP reply code. The first hit wins, as in flufl.bounce's ordered detector list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from types import ModuleType

from bouncekeeper.core.memo import bounded
from bouncekeeper.core.model import Reason
from bouncekeeper.core.rules import (
    amazonses,
    aol,
    apple,
    cox,
    domino,
    exchange,
    exim,
    facebook,
    fml,
    generic,
    gmx,
    godaddy,
    google,
    imailserver,
    iua,
    kddi,
    mailru,
    mimecast,
    orange,
    postfix,
    prefilter,
    qmail,
    sendmail,
    spectrum,
    status,
    tencent,
    yahoo,
    zoho,
)

# Priority order of the dialect tables. Each module exports PATTERNS: tuple[tuple[Reason, str], ...].
# The providers whose refusals carry a code of their own (Cox's and Spectrum's "AUP#", GoDaddy's "IBnnn",
# Orange's "OFR_nnn", I.UA's "/err/N", Facebook's "RCP-P1") come first: the code is unambiguous, where
# their words might read as another table's.
DIALECTS = (
    cox,
    spectrum,
    godaddy,
    orange,
    iua,
    facebook,
    google,
    exchange,
    yahoo,
    aol,
    gmx,
    mailru,
    tencent,
    apple,
    mimecast,
    amazonses,
    domino,
    imailserver,
    kddi,
    zoho,
    qmail,
    exim,
    postfix,
    sendmail,
    fml,
)

# All rows in priority order: provider dialects, then the generic STRONG, ADDRESS and WEAK tiers. Each
# row's regex runs only when the text contains one of the row's literals (derived by
# rules.prefilter from the regex itself): finding which rows qualify is one substring test per literal
# and a dictionary lookup, instead of a regex scan per row (benchmarks/classify_speed.py).
_TIER_STRENGTH = {"dialect": 3, "strong": 3, "address": 2, "weak": 1}


@dataclass(slots=True)
class _Row:
    reason: Reason
    source: str
    tier: str
    _compiled: re.Pattern[str] | None = None

    @property
    def pattern(self) -> re.Pattern[str]:
        """The row's regex, compiled the first time a text holds one of its literals: most rows never
        run in a short-lived process. Two threads may both compile it; either result is the same."""
        if self._compiled is None:
            self._compiled = re.compile(self.source)
        return self._compiled


@dataclass(frozen=True, slots=True)
class _Table:
    """The compiled rows of a set of dialects and the generic tiers, and the phases explain() reads."""

    rows: list[_Row]
    by_literal: dict[str, list[int]]
    always: frozenset[int]  # rows without a literal: their regex always runs
    # Two phases: the rows that outrank a specific status code (dialect, STRONG) and those it outranks
    # (ADDRESS, WEAK). A report with a specific code and no strong phrase never scans the second phase's
    # literals.
    phases: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]
    dead_at_any_stage: re.Pattern[str]
    # Per phase, its literals filed under one three-character piece of each (_screen): explain() tests
    # only the literals whose piece the text holds.
    screens: tuple[dict[str, tuple[str, ...]], ...] = ()
    screen_keys: tuple[frozenset[str], ...] = ()  # each screen's pieces, for a set intersection in C
    # Every screen's pieces: a text's pieces are filtered through it as they are made, never collected
    # whole (explain).
    all_keys: frozenset[str] = frozenset()
    # Per phase, each literal's rows of that phase only: no row of the other phase is a candidate.
    phase_rows: tuple[dict[str, tuple[int, ...]], ...] = ()


def _compile(dialects: tuple[ModuleType, ...]) -> _Table:
    tiers = (
        ("dialect", tuple(row for module in dialects for row in module.PATTERNS)),
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
            for source, literals in prefilter.pieces(whole):
                index = len(rows)
                # No IGNORECASE: explain() lower-cases the text once, and the tables are written in lower
                # case (tests/core/test_rules.py checks it); a case-blind regex is about twice as slow.
                rows.append(_Row(reason, source, tier))
                if literals is None:
                    always.append(index)
                for literal in literals or ():
                    by_literal.setdefault(literal, []).append(index)
    first = frozenset(i for i, row in enumerate(rows) if row.tier in ("dialect", "strong"))
    phase_rows = tuple(
        {
            literal: tuple(r for r in hits if (r in first) is is_first)
            for literal, hits in by_literal.items()
            if any((r in first) is is_first for r in hits)
        }
        for is_first in (True, False)
    )
    phases = tuple(
        (tuple(sorted(rows_of)), tuple(i for i in always if (i in first) is is_first))
        for rows_of, is_first in zip(phase_rows, (True, False), strict=True)
    )
    # Provider texts that name a dead mailbox whatever SMTP command they answered (a dialect's optional
    # DEAD_AT_ANY_STAGE): classify's stage policy reads "user unknown" after DATA as a content filter's
    # words, except for these.
    dead = "|".join(source for module in dialects for source in getattr(module, "DEAD_AT_ANY_STAGE", ()))
    screens = tuple(_screen(literals) for literals, _ in phases)
    keys = tuple(frozenset(screen) for screen in screens)
    return _Table(
        rows,
        by_literal,
        frozenset(always),
        phases,
        re.compile(dead or r"(?!)"),
        screens,
        keys,
        frozenset().union(*keys),
        phase_rows,
    )


# Letters from the most to the least frequent in English text: a piece of rarer letters is in fewer texts.
_COMMON = " etaoinsrhldcumfpgwybvkxjqz"
_RARITY = {c: i for i, c in enumerate(_COMMON)}
_RAREST = len(_COMMON) - 1  # digits, punctuation, other scripts


def _screen(literals: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each literal filed under its rarest three-character piece (prefilter.MIN_LITERAL is 3). A text that
    holds a literal holds its piece; so the literals to test against a text are those filed under the
    pieces it holds, a few instead of hundreds (the substring tests were a quarter of the classifier's
    time: benchmarks/classify_speed.py)."""
    filed: dict[str, list[str]] = {}
    for literal in literals:
        if len(literal) < 3:
            filed.setdefault("", []).append(literal)  # tested on every text (_first_hit)
            continue
        rarity = [_RARITY.get(c, _RAREST) for c in literal]
        scores = [rarity[i] + rarity[i + 1] + rarity[i + 2] for i in range(len(literal) - 2)]
        start = scores.index(max(scores))  # the first of the rarest, as max() would pick it
        piece = literal[start : start + 3]
        filed.setdefault(piece, []).append(literal)
    return {piece: tuple(found) for piece, found in filed.items()}


# Past this length, building a text's set of pieces costs more than testing every literal.
_SCREEN_MAX = 1000


_TABLE = _compile(DIALECTS)


@contextmanager
def without(names: Iterable[str]) -> Iterator[None]:
    """The rules with the named dialect modules switched off, for measuring what the generic machinery
    does on a family it was not tuned for (benchmarks/generalisation.py). Not for the mail path: it
    swaps a module-wide table."""
    global _TABLE  # noqa: PLW0603 - one table for the process; the benchmark swaps it and puts it back
    off = set(names)
    unknown = off - {module.__name__.rpartition(".")[2] for module in DIALECTS}
    if unknown:
        raise ValueError(f"no such dialect: {sorted(unknown)}")
    saved = _TABLE
    _TABLE = _compile(tuple(m for m in DIALECTS if m.__name__.rpartition(".")[2] not in off))
    explain.cache_clear()  # its answers came from the other table
    try:
        yield
    finally:
        _TABLE = saved
        explain.cache_clear()


# An address names a mailbox, not a reason: its words must not read as one ("refused@refused.test" as a
# refusal, "<policy@example.org>" as a policy block). A real Exim 4.96 delay warning holds no diagnostic,
# only the address (tests/fixtures/mta/exim-refused-delay.eml), so the whole report is read and the address
# alone decided. The domain stops before trailing dots, so Sendmail's "<a@b.test>... User unknown" keeps
# its "...".
_ADDRESS = re.compile(r"[^\s<>\"'(),;:@\[\]]+@[\w-]+(?:\.[\w-]+)+")
_NO_ADDRESS = "x@x"


def dead_at_any_stage(text: str) -> bool:
    """Whether a provider's own words say the mailbox does not exist, at whatever stage it refused."""
    return _TABLE.dead_at_any_stage.search(" ".join(text.split()).lower()) is not None


def reason_for(text: str, status_code: str | None, reply_code: int | None) -> Reason:
    """The reason a failure happened, from its diagnostic text and codes."""
    return explain(text, status_code, reply_code)[0]


def _first_hit(text: str, phase: int, pieces: frozenset[str] | None) -> _Row | None:
    """The first row of the phase whose regex finds `text`; `pieces`: the text's three-character pieces
    that some literal is filed under (None: test every literal)."""
    table = _TABLE
    literals, always = table.phases[phase]
    candidates = set(always)
    if pieces is not None:
        screen, keys = table.screens[phase], table.screen_keys[phase]
        literals = (*screen.get("", ()), *chain.from_iterable(map(screen.__getitem__, pieces & keys)))
    rows_of = table.phase_rows[phase]
    for literal in filter(text.__contains__, literals):  # C-level scan: no bytecode per absent literal
        candidates.update(rows_of[literal])
    rows = table.rows
    for index in sorted(candidates):
        if rows[index].pattern.search(text):
            return rows[index]
    return None


_PHASES = ((0, status.specific, 2), (1, status.generic, 1))


# A report explains each recipient from the same texts (its whole human part as the fallback, one
# diagnostic for many recipients): the last few answers are kept. Small, so that it holds one message's
# texts, not a day's.
@bounded(maxsize=64, longest=4096)
def explain(text: str, status_code: str | None, reply_code: int | None) -> tuple[Reason, int]:
    """The reason and how sure: 3 a provider or STRONG phrase, 2 a specific status code or an ADDRESS
    phrase, 1 a WEAK phrase or a generic code, 0 nothing.

    Order: dialect and STRONG rows, a specific RFC 3463 code, ADDRESS rows, WEAK rows, a generic code,
    the SMTP reply code. The first hit wins.
    """
    text = " ".join(text.split()).lower()  # one line: MTAs wrap diagnostics anywhere
    if "@" in text:
        # Word by word: an address holds no blank, and the pattern tried at every letter of every word
        # cost twice the words holding "@".
        text = " ".join(_ADDRESS.sub(_NO_ADDRESS, word) if "@" in word else word for word in text.split(" "))
    # The text's three-character pieces that some literal is filed under, filtered as they are made
    # (zip and join in C; the shorter slices end it two short, as they should): a set of all of them
    # cost a third of explain().
    pieces = (
        _TABLE.all_keys.intersection(map("".join, zip(text, text[1:], text[2:], strict=False)))
        if len(text) <= _SCREEN_MAX
        else None
    )
    # Each phase's rows, then the status code it outranks: a specific one after the first phase's
    # (dialect, STRONG), a generic one after the second's (ADDRESS, WEAK).
    for phase, by_status, strength in _PHASES:
        row = _first_hit(text, phase, pieces)
        if row is not None:
            return row.reason, _TIER_STRENGTH[row.tier]
        found = by_status(status_code)
        if found is not None:
            return found, strength
    if reply_code is not None:
        reason = status.REPLY_CODES.get(reply_code, Reason.UNDEFINED)
        return reason, 0 if reason is Reason.UNDEFINED else 1
    return Reason.UNDEFINED, 0
