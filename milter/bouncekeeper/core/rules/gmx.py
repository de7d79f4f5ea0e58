"""GMX, web.de and other 1&1 / United Internet mailers (German texts included)."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (
        Reason.USERUNKNOWN,
        r"mailbox nicht verf[üu]gbar|empf[äa]nger unbekannt|"
        r"unbekannter empf[äa]nger|recipient address invalid",
    ),
    (Reason.MAILBOXFULL, r"mailbox quota exceeded|postfach (?:ist )?voll|speicherplatz"),
    (Reason.BLOCKED, r"mail rejected by 1&1|rejected by the ionos|\bbl\d{2}-[a-z]"),
    (Reason.SPAMDETECTED, r"spam message rejected|ui-policy|virus/spam"),
    (Reason.HOSTUNKNOWN, r"unknown recipient domain"),
)
