"""A fixture for tests that call cli.main: it configures the root logger for its process (log.setup),
with a handler on the sys.stderr of that moment, which pytest closes after the test. Later log lines
(a listener thread's, for instance) would then fail with "I/O operation on closed file"."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    # An earlier test elsewhere may have left such a handler on a stream pytest has closed since.
    for handler in list(root.handlers):
        stream = getattr(handler, "stream", None)
        if stream is not None and getattr(stream, "closed", False):
            root.removeHandler(handler)
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
