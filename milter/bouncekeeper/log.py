"""Logging with the queue id on every line.

The adapters set `queue_id` (a ContextVar) when they learn it (Postfix's {i} macro, the LMTP session
id); every logger obtained through `get_logger` prefixes it, so one grep follows one message through
milter, classifier and store.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

queue_id: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="-")


class QueueIdAdapter(logging.LoggerAdapter[logging.Logger]):
    """Puts the current queue id in front of every message: `name: QUEUEID: text`."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{queue_id.get()}: {msg}", kwargs


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


def setup(level: str = "INFO", target: str = "stderr", facility: str = "mail") -> None:
    """Configure the root logger once, for a daemon or a CLI command."""
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
