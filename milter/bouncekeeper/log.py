"""Logging with the queue id on every line.

The adapters set `queue_id` (a ContextVar) when they learn it (Postfix's {i} macro, the LMTP session
id); every logger obtained through `get_logger` prefixes it, so one grep follows one message through
milter, classifier and store.

`QueueIdAdapter.cut` writes the lines about cuts a stranger can cause at will (docs/hostile.md): a few
of each kind per interval, then one line saying how many were held back (core/throttle.LineLimit).
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

from bouncekeeper.core import throttle

queue_id: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="-")


class _CutLines:
    """The process's one LineLimit and its clock (a test passes its own)."""

    def __init__(self) -> None:
        self.limit = throttle.LineLimit()
        self.clock: Callable[[], float] = time.monotonic

    def configure(
        self,
        burst: int = throttle.LINE_BURST,
        interval: float = throttle.LINE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A fresh table: every kind starts a new window."""
        self.limit = throttle.LineLimit(burst=burst, interval=interval)
        self.clock = clock


cut_lines = _CutLines()


class QueueIdAdapter(logging.LoggerAdapter[logging.Logger]):
    """Puts the current queue id in front of every message: `name: QUEUEID: text`."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{queue_id.get()}: {msg}", kwargs

    def cut(self, kind: str, msg: str, *args: object, level: int = logging.WARNING) -> None:
        """Log a line about a cut (a limit a client ran into), rate-limited per logger and `kind`.

        `kind` is a fixed word of the caller's, never anything the client chose: the table of kinds
        must not be what a flood fills. A level that is off costs nothing of the budget.
        """
        if not self.isEnabledFor(level):
            return
        lines = cut_lines.limit.admit((self.logger.name, kind), cut_lines.clock())
        if lines.suppressed:
            self.log(
                level,
                "%s: %d similar lines suppressed in the last %.0f s",
                kind,
                lines.suppressed,
                lines.span,
            )
        if lines.write:
            self.log(level, msg, *args)


class _CurrentStderr(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time of the record, not at set-up.

    A daemon never swaps stderr, but tests (and tools embedding the CLI) do; a handler bound to a stream
    that was since closed would fail on every later log line.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


# The library loggers limit_library took in: set_level keeps them in step with `[log] level`.
_LIMITED_LIBRARIES: set[str] = set()


class _LibraryCuts(logging.Filter):
    """Rate-limits the WARNING and ERROR lines of a library's logger, each of its format strings a kind
    (a constant of the library's, not the client's text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # only logged at DEBUG, which the operator asked for
        lines = cut_lines.limit.admit((record.name, str(record.msg)), cut_lines.clock())
        if lines.write and lines.suppressed:
            message = record.getMessage()
            record.msg = "%s (and %d similar lines suppressed in the last %.0f s)"
            record.args = (message, lines.suppressed, lines.span)
        return lines.write


def limit_library(name: str, *, debug: bool) -> None:
    """A library logger that logs what a client does (aiosmtpd's "mail.log": every command line, at
    INFO): its INFO lines only when the operator logs at DEBUG, its warnings rate-limited as cuts."""
    _LIMITED_LIBRARIES.add(name)
    library = logging.getLogger(name)
    library.setLevel(logging.NOTSET if debug else logging.WARNING)
    if not any(isinstance(f, _LibraryCuts) for f in library.filters):
        library.addFilter(_LibraryCuts())


def set_level(level: str) -> None:
    """`[log] level` at start and again on SIGHUP (it is not restart-only): the root logger's level, and
    the libraries limited here follow it (their INFO lines only at DEBUG)."""
    logging.getLogger().setLevel(level)
    for name in _LIMITED_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)


def get_logger(name: str) -> QueueIdAdapter:
    return QueueIdAdapter(logging.getLogger(name), {})


def under_journald() -> bool:
    """Whether stderr is the journal's stream: systemd sets JOURNAL_STREAM to its "device:inode"
    (systemd.exec(5)); a child that inherited the variable but writes elsewhere does not match."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"


def setup(
    level: str = "INFO",
    target: str = "stderr",
    facility: str = "mail",
    *,
    burst: int = throttle.LINE_BURST,
    interval: float = throttle.LINE_INTERVAL,
) -> None:
    """Configure the root logger once, for a daemon or a CLI command; `burst` lines about cuts of a
    kind per `interval` seconds (QueueIdAdapter.cut)."""
    cut_lines.configure(burst, interval)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    out: logging.Handler
    if target == "syslog":
        # Imported here: it brings socket, pickle and queue, a tenth of a short command's start-up.
        from logging.handlers import SysLogHandler  # noqa: PLC0415

        out = SysLogHandler(address="/dev/log", facility=SysLogHandler.facility_names[facility])
        out.setFormatter(logging.Formatter("bouncekeeper[%(process)d]: %(name)s: %(message)s"))
    else:
        out = _CurrentStderr()
        # Under systemd the journal stamps every line itself: a second timestamp is noise.
        stamp = "" if under_journald() else "%(asctime)s "
        out.setFormatter(logging.Formatter(stamp + "%(levelname)s %(name)s: %(message)s"))
    root.addHandler(out)
    root.setLevel(level)
