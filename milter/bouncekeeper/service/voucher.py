"""What the authentic VERP address a bounce came to vouches for: the recipients it names (its own, or its
token's). Only these recipients are evidence: a bounce is written by whoever sends it (service.bounces
records the others unscored). Whether the address is authentic is the core's verdict (core/rcpt.py)."""

from __future__ import annotations

from dataclasses import dataclass

from bouncekeeper.core import verp
from bouncekeeper.service import ids
from bouncekeeper.store import Store


@dataclass(frozen=True, slots=True)
class Voucher:
    """What the authentic VERP address a bounce came to says: the recipient it names, or its token's
    recipients (and the message's data the token kept), and its id for the replay check."""

    recipient: str | None = None
    token_recipients: tuple[str, ...] = ()
    context: str = ""
    message_id: str | None = None
    sender: str | None = None  # the original mail's sender (token mode): picks the notify target
    verp_id: str = ""

    @property
    def vouched(self) -> tuple[str, ...]:
        return (self.recipient,) if self.recipient else self.token_recipients


def vouch(checked: verp.VerpResult | None, store: Store) -> Voucher:
    """What an authentic VERP address (`checked`, None when there is none) vouches for; a token's
    recipients are read from the store (raises StoreUnavailable)."""
    if checked is None:
        return Voucher()
    if checked.token is None:
        return Voucher(checked.recipient, context=checked.context, verp_id=ids.verp_id(checked))
    data = store.get_token(checked.token)
    if data is None:
        return Voucher(context=checked.context)
    recipients = tuple(r for r in data.get("recipients", "").split("\n") if r)
    return Voucher(
        recipients[0] if len(recipients) == 1 else None,
        recipients,
        context=data.get("context", "") or checked.context,
        message_id=data.get("message_id") or None,
        sender=data.get("sender") or None,
        verp_id=ids.verp_id(checked),
    )
