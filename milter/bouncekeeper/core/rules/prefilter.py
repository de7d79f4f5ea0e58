"""Literal prefilters for the rule tables, derived from each regular expression's parse tree.

`literals(pattern)` returns lower-case strings of which every match of `pattern` contains at least one,
or None when the pattern guarantees none (then the regex always runs). Derived, never hand-written, so a
new table row can never be silently skipped by a stale prefilter; tests/core/test_rules.py checks the
derivation on every row.
"""

from __future__ import annotations

import re

# The stdlib's own regex parser (re._parser since 3.11, requires-python >= 3.11): the tree it builds is
# the one the regex engine runs, so the literals derived here are exactly the pattern's.
from re import _constants as _c  # type: ignore[attr-defined]  # typeshed omits the private module
from re import _parser as _p  # type: ignore[attr-defined]  # typeshed omits the private module
from typing import Any

MIN_LITERAL = 3  # shorter literals match almost every text and only cost time

Need = tuple[str, ...]  # a disjunction: at least one of these is in every match


def literals(pattern: str, minimum: int = MIN_LITERAL) -> Need | None:
    """Literals of at least `minimum` characters one of which every match of `pattern` contains."""
    try:
        tree = _p.parse(pattern, re.IGNORECASE)
    except re.error:
        return None
    return literals_in(tree, minimum)


def literals_in(tree: Any, minimum: int = MIN_LITERAL) -> Need | None:
    """literals() of a pattern already parsed (parsed_alternatives)."""
    need = _need(list(tree), minimum)
    if need is None:
        return None
    # "quota" present whenever "quota exceeded" is: a disjunction needs only its shortest members.
    return tuple(x for x in need if not any(y != x and y in x for y in need))


def _score(need: Need) -> tuple[int, int]:
    return (min(len(x) for x in need), -len(need))


def _need(items: list[Any], minimum: int) -> Need | None:
    """The best disjunction of literals that every match of the sequence `items` contains."""
    best: Need | None = None
    run: list[str] = []

    def offer(candidate: Need | None) -> None:
        nonlocal best
        if (
            candidate
            and all(len(x) >= minimum for x in candidate)
            and (best is None or _score(candidate) > _score(best))
        ):
            best = candidate

    def close_run() -> None:
        if run:
            offer(("".join(run),))
            run.clear()

    for op, arg in items:
        if op is _c.LITERAL:
            run.append(chr(arg).lower())
            continue
        close_run()
        offer(_element_need(op, arg, minimum))
    close_run()
    return best


def _element_need(op: Any, arg: Any, minimum: int) -> Need | None:
    """What one element of a sequence that is no literal guarantees: a group's, an alternation's (when
    each branch guarantees some), a repeat's of at least once."""
    if op is _c.SUBPATTERN:
        return _need(list(arg[-1]), minimum)
    if op is _c.BRANCH:
        alternatives = [_need(list(branch), minimum) for branch in arg[1]]
        if all(alt is not None for alt in alternatives):
            return tuple(dict.fromkeys(x for alt in alternatives if alt for x in alt))
        return None
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and arg[0] >= 1:
        return _need(list(arg[2]), minimum)
    return None


def pieces(pattern: str) -> list[tuple[str, Need | None]]:
    """The top-level alternatives of `pattern` ("a|(b|c)|d" -> "a", "(b|c)", "d"; the pattern itself when
    it has none or when a piece would not parse on its own), each piece with its literals: those of
    MIN_LITERAL characters, else of two (a row of two CJK characters or "bl" before digits is still
    screened by them). Each piece is parsed once, for its literals and as the check that it stands on
    its own, and a piece without a regex metacharacter not at all: it is its own literal. Compiling
    waits for a text that holds a literal (rules._Row): parsing and compiling every row at import was a
    quarter of `bouncekeeper classify`'s start-up."""
    split = _split(pattern)
    try:
        trees = [None if _PLAIN.fullmatch(piece) else _p.parse(piece, re.IGNORECASE) for piece in split]
    except re.error:
        split, trees = [pattern], [_p.parse(pattern, re.IGNORECASE)]
    found: list[tuple[str, Need | None]] = []
    for piece, tree in zip(split, trees, strict=True):
        if tree is None:
            lower = "".join(char.lower() for char in piece)  # as _need lower-cases each character
            found.append((piece, (lower,) if len(lower) >= 2 else None))
        else:
            found.append((piece, literals_in(tree) or literals_in(tree, minimum=2)))
    return found


# A piece made of ordinary characters only: every match is the piece itself.
_PLAIN = re.compile(r"[^.^$*+?{}\[\]\\|()]+")


def _split(pattern: str) -> list[str]:
    pieces: list[str] = []
    depth = 0
    in_class = False
    start = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[index + 1 : index + 2] == "]":
                index += 1  # "[]...]": the first ] is a member
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            pieces.append(pattern[start:index])
            start = index + 1
        index += 1
    pieces.append(pattern[start:])
    return pieces


class Screened:
    """A compiled pattern written for lower-cased text, with the literals derived from it (literals()):
    search() runs the regex only when the text holds one of them. For long alternations searched on
    whole reports, which mostly hold none of their phrases: a few substring tests cost less than
    trying every alternative at every position."""

    __slots__ = ("literals", "pattern")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.literals = literals(pattern.pattern)

    def search(self, lower: str) -> re.Match[str] | None:
        # filter() runs the substring tests in C, stopping at the first literal found.
        if self.literals is not None and next(filter(lower.__contains__, self.literals), None) is None:
            return None
        return self.pattern.search(lower)
