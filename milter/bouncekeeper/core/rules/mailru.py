"""Mail.ru, Yandex and other Russian providers (English and Russian texts)."""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (
        Reason.USERUNKNOWN,
        r"user not found|no such user|mailbox not found|пользователь не найден|"
        r"нет такого пользователя|адрес не существует",
    ),
    (Reason.MAILBOXFULL, r"mailbox is full|ящик переполнен|переполнен"),
    (Reason.SPAMDETECTED, r"message rejected as spam|rejected due to spam|спам"),
    (Reason.SUSPEND, r"mailbox is disabled|user is blocked|заблокирован"),
)
