"""Starting and stopping test servers (MTAs, sinks, milters, listeners) together."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class Startable(Protocol):
    def start(self) -> object: ...

    def stop(self) -> object: ...  # some report an exit status; running() needs none


@contextlib.contextmanager
def running(*things: Startable) -> Iterator[None]:
    """Start things in order, stop the started ones in reverse, whatever happens in between."""
    started: list[Startable] = []
    try:
        for thing in things:
            thing.start()
            started.append(thing)
        yield
    finally:
        for thing in reversed(started):
            thing.stop()
