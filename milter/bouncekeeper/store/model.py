"""What the store takes and gives: a bounce's items and their results, imported suppressions, an address's
view, the stream's entries."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bouncekeeper.core.scoring import Effect, State
from bouncekeeper.store.event import Event


@dataclass(frozen=True, slots=True)
class Item:
    """One address's part of one bounce."""

    address: str
    effect: Effect
    event: Event
    # The bounce came with evidence for this address (a signed VERP address naming it, the
    # application's own SMTP-time report): only then does it count towards the domain's circuit breaker.
    authentic: bool = True
    # The signed VERP address (or token) the bounce came to, as an id: it scores this address once within
    # Rules.replay_window (record.lua). Empty: no replay check.
    verp_id: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    address: str
    duplicate: bool
    state: State
    score: int
    soft_count: int
    scored: bool = False
    converted: bool = False
    disabled: bool = False
    reached: bool = False
    crossed: bool = False  # this bounce took the score to the threshold (announced once per crossing)
    frozen: bool = False
    why: str = ""


@dataclass(frozen=True, slots=True)
class Suppression:
    """One address of an imported suppression list (`bouncekeeper import`): the state to hold, since when
    and by whom, and the audit event that says where it came from."""

    address: str
    state: State
    since: float
    by: str
    event: Event


@dataclass(frozen=True, slots=True)
class AddressView:
    """One address as Redis holds it now, with the seconds left before each counter resets."""

    address: str
    state: State
    since: float | None = None
    by: str | None = None
    soft_count: int = 0
    soft_ttl: int | None = None
    hard_score: int = 0
    hard_day: int | None = None
    hard_ttl: int | None = None
    hits: int = 0
    hits_ttl: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tracked(self) -> bool:
        return self.state is not State.ACTIVE or bool(self.soft_count or self.hard_score or self.hits)


def parse_entry(fields: dict[str, str]) -> dict[str, Any]:
    """A stream entry's fields as one dict (the JSON `event` merged with `kind` and `address`)."""
    out: dict[str, Any] = json.loads(fields.get("event") or "{}")
    out.setdefault("kind", fields.get("kind"))
    if fields.get("address"):
        out.setdefault("address", fields["address"])
    return out
