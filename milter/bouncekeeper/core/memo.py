"""A small, bounded memory for the core's pure text functions.

One report asks the same questions of the same texts once per recipient (the whole report as each one's
fallback, one diagnostic for many recipients, the From header in every stage). `bounded` keeps the last
answers of a pure function whose first argument is a text, and passes texts longer than `longest`
straight through: what the cache keeps alive is at most `maxsize` texts of `longest` characters, whatever
a stranger sends. functools.lru_cache is thread-safe; the milter classifies in several threads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class Bounded(Generic[P, R]):
    """`func` with the last `maxsize` answers kept for first arguments of at most `longest` items."""

    def __init__(self, func: Callable[P, R], maxsize: int, longest: int) -> None:
        self._func = func
        self._cached = functools.lru_cache(maxsize=maxsize)(func)
        self._longest = longest
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        first = args[0] if args else None
        if kwargs or (isinstance(first, str | bytes) and len(first) > self._longest):
            return self._func(*args, **kwargs)
        return self._cached(*args)

    def cache_clear(self) -> None:
        self._cached.cache_clear()


def bounded(maxsize: int, longest: int) -> Callable[[Callable[P, R]], Bounded[P, R]]:
    """Decorate a pure function of a text (and hashable arguments) with a bounded memory (Bounded)."""

    def wrap(func: Callable[P, R]) -> Bounded[P, R]:
        return Bounded(func, maxsize, longest)

    return wrap
