"""The one error the store raises: the mail adapters answer 451 4.3.0 on it and never lose a message."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """Redis could not be reached, timed out, or refused the command; the write did not happen."""
