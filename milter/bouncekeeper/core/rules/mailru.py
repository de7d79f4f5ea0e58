"""Mail.ru, Yandex and other Russian providers (English and Russian texts)."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    # Only what the generic tables do not say already: a provider row outranks every generic one.
    (Reason.USERUNKNOWN, r"пользователь не найден|нет такого пользователя|адрес не существует"),
    (Reason.MAILBOXFULL, r"ящик переполнен|переполнен"),
    (Reason.SPAMDETECTED, r"message rejected as spam|rejected due to spam|спам"),
    (Reason.SUSPEND, r"mailbox is disabled|user is blocked|заблокирован"),
)
