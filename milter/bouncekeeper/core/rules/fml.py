"""fml, the Japanese mailing-list manager: its notices to a poster whose article the list refused.

They are no DSN and come from the list's "-admin" address, not a mailer-daemon: `is_notice` recognises
them by fml's own headers (Sisimai's Lhost::FML reads them the same way), and the failed recipient is the
list address the notice names, "<list@example.org>." at the end of its line.
"""

from __future__ import annotations

import re

from bouncekeeper.core.model import Reason

# Applied to every report (rules.DIALECTS), so only fml's own phrasings are rows.
PATTERNS: tuple[tuple[Reason, str], ...] = (
    (
        Reason.REJECTED,
        r"are not a member of this mailing list|you .{0,80} are not member|not member article from|"
        r"spam mail from a spammer is rejected|header may cause mail loop",
    ),
    (
        Reason.SYSTEMERROR,
        r"fml system error message|loop alert: |loop back warning: |unix from loop|"
        r"has detected a loop condition",
    ),
)

_LIST_ADDRESS = re.compile(r"<([^<>\s@]+@[^<>\s@]+)>\.\s*$", re.MULTILINE)


def is_notice(x_mlserver: str | None, sender: str, message_id: str | None) -> bool:
    """An fml notice: fml's X-MLServer header, sent by the list's -admin address, fml's Message-ID."""
    return bool(
        x_mlserver
        and x_mlserver.lstrip().lower().startswith("fml")
        and "-admin@" in sender.lower()
        and ".fml" in (message_id or "").lower()
    )


def recipients(text: str) -> list[str]:
    """The list addresses the notice names at the end of a line ("... mailing list <list@example.org>.")."""
    return list(dict.fromkeys(match.group(1) for match in _LIST_ADDRESS.finditer(text)))
