"""core/memo.py: a bounded memory for the core's pure text functions."""

from __future__ import annotations

from bouncekeeper.core import memo


def test_short_texts_are_answered_from_memory_and_long_ones_never_kept() -> None:
    seen: list[str] = []

    @memo.bounded(maxsize=2, longest=5)
    def upper(text: str) -> str:
        seen.append(text)
        return text.upper()

    assert [upper("ab"), upper("ab"), upper("abcdefgh"), upper("abcdefgh")] == [
        "AB",
        "AB",
        "ABCDEFGH",
        "ABCDEFGH",
    ]
    assert seen == ["ab", "abcdefgh", "abcdefgh"]  # the long text ran twice: it was not kept
    upper.cache_clear()
    upper("ab")
    assert seen[-1] == "ab"


def test_the_oldest_answer_goes_first() -> None:
    seen: list[str] = []

    @memo.bounded(maxsize=2, longest=10)
    def same(text: str) -> str:
        seen.append(text)
        return text

    for text in ("a", "b", "c", "a"):
        same(text)
    assert seen == ["a", "b", "c", "a"]  # "a" was forgotten when "c" came
