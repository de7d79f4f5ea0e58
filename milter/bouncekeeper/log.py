"""Logging with the queue id on every line.

The adapters set `queue_id` (a ContextVar) when they learn it (Postfix's {i} macro, the LMTP session
id); every logger obtained through `get_logger` prefixes it, so one grep follows one message through
milter, classifier and store.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import sys
from collections.abc import MutableMapping
from typing import Any

queue_id: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="-")


class QueueIdAdapter(logging.LoggerAdapter[logging.Logger]):
    """Puts the current queue id in front of every message: `name: QUEUEID: text`."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{queue_id.get()}: {msg}", kwargs


def get_logger(name: str) -> QueueIdAdapter:
    return QueueIdAdapter(logging.getLogger(name), {})


def setup(level: str = "INFO", target: str = "stderr", facility: str = "mail") -> None:
    """Configure the root logger once, for a daemon or a CLI command."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    out: logging.Handler
    if target == "syslog":
        out = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.facility_names[facility]
        )
        out.setFormatter(logging.Formatter("bouncekeeper[%(process)d]: %(name)s: %(message)s"))
    else:
        out = logging.StreamHandler(sys.stderr)
        out.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(out)
    root.setLevel(level)
