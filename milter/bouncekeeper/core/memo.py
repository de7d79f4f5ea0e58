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
from typing import Any, ParamSpec, Protocol, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Bounded(Protocol[P, R_co]):
    """A function with a bounded memory of its answers (bounded)."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def cache_clear(self) -> None: ...


def bounded(maxsize: int, longest: int) -> Callable[[Callable[P, R]], Bounded[P, R]]:
    """Keep the last `maxsize` answers of a pure function whose first argument is a text (or None), for
    texts of at most `longest` items; its other arguments are positional and hashable."""

    def wrap(func: Callable[P, R]) -> Bounded[P, R]:
        cached = functools.lru_cache(maxsize=maxsize)(func)

        # A plain function with positional arguments: a class's __call__ with *args and **kwargs cost
        # four times this, which was 3% of the classifier's time for the calls it saved.
        @functools.wraps(func)
        def call(text: Any, *rest: Any) -> Any:
            if text is not None and len(text) > longest:
                return func(text, *rest)  # type: ignore[call-arg]
            return cached(text, *rest)

        call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return cast("Bounded[P, R]", call)

    return wrap
