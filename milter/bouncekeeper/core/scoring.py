"""What a failure does to an address: counters, thresholds and windows as a pure state machine.

Nothing here reads a clock or talks to Redis: `now` (seconds since the epoch, UTC) is passed in. The store
runs the same machine atomically in Lua (store/lua/record.lua); `tests/store/test_store.py` drives both with
the same event sequences and requires the same answers, so this module is the executable specification.

The rules (defaults from the issue; all configurable):

- **soft** (a temporary failure that says something about the address: mailbox full, host down ...):
  a counter that expires `soft_window` seconds after the *last* soft failure. Reaching `soft_threshold`
  inside the window becomes one hard event, and the counter restarts (HPI Bounced Email Service).
- **hard**, rule `daily` (Launchpad, Mailman): a score that rises by one per UTC calendar day with at least
  one hard event, not per bounce, so one bad mailing cannot disable anyone. It resets to zero when it has
  not risen for `quiet` seconds; in Redis that is the key's TTL, re-armed only when the score rises.
- **hard**, rule `count` (MediaWiki's "3 in a week"): `count_threshold` hard events within `count_window`.
- Reaching the threshold disables the address (`disabled-bounces`) in `enforce` mode; in `observe` mode
  the counters run and the decision is reported, but nothing is disabled. A disabled state never expires.
- Reasons that say nothing about the address (blocked, spam, policy, size, rate ...), auto-replies,
  feedback reports, success and delay notices, forged VERP and failures of unknown kind are recorded,
  never scored.
- Evidence first (docs/security.md): a failure the bounce names without an authentic VERP
  address for it is never scored unless `[policy] require_verp = false` (service/bounces.py), and one signed
  VERP address scores an address once within `replay_window` (record.lua's replay key, outside `step`).
- **per-domain circuit breaker** (`trip`): when `breaker_addresses` distinct addresses of one domain get a
  scored failure within `breaker_window`, the domain scores nothing for `breaker_freeze` (docs/redis.md,
  "Per-domain circuit breaker"); store/lua/breaker.lua is the same machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from bouncekeeper.core.model import BounceKind, Reason

DAY = 86_400


class State(StrEnum):
    """Launchpad's list of email address states. Only ACTIVE addresses are mailed."""

    ACTIVE = "active"
    DISABLED_BOUNCES = "disabled-bounces"
    DISABLED_USER = "disabled-user"
    DISABLED_ADMIN = "disabled-admin"


class Effect(StrEnum):
    """What one recorded failure contributes to its address's counters."""

    HARD = "hard"
    SOFT = "soft"
    NONE = "none"


class Rule(StrEnum):
    DAILY = "daily"
    COUNT = "count"


class Mode(StrEnum):
    OBSERVE = "observe"
    ENFORCE = "enforce"


# Reasons that describe the message, the sender or the path, not the recipient's address (the requirement:
# "blocked, spam/content/policy/virus filtered, DMARC/auth failures, message too large, rate limits").
# `rejected` is Sisimai's "the *sender* was rejected"; `norelaying` and `syntaxerror` are our own MTA's
# configuration problems; `exceedlimit` is a size limit.
DEFAULT_NON_SCORING: frozenset[Reason] = frozenset(
    {
        Reason.BLOCKED,
        Reason.FILTERED,
        Reason.SPAMDETECTED,
        Reason.POLICYVIOLATION,
        Reason.VIRUSDETECTED,
        Reason.CONTENTERROR,
        Reason.SECURITYERROR,
        Reason.AUTHFAILURE,
        Reason.MESGTOOBIG,
        Reason.EXCEEDLIMIT,
        Reason.TOOMANYCONN,
        Reason.REJECTED,
        Reason.NORELAYING,
        Reason.SYNTAXERROR,
        # Not failures at all.
        Reason.VACATION,
        Reason.FEEDBACK,
        Reason.DELIVERED,
        Reason.DELAYED,
    }
)


@dataclass(frozen=True, slots=True)
class Rules:
    """The policy's parameters, with every window in seconds (tests use windows of a second or two)."""

    mode: Mode = Mode.OBSERVE
    rule: Rule = Rule.DAILY
    soft_threshold: int = 5
    soft_window: int = 7 * DAY
    hard_threshold: int = 5
    quiet: int = 7 * DAY
    count_threshold: int = 3
    count_window: int = 7 * DAY
    # The length of a "calendar day" for the daily rule: 86400 in production (UTC days, since epoch
    # seconds have no leap seconds); tests shrink it to watch a score rise over several "days".
    day_length: int = DAY
    non_scoring: frozenset[Reason] = field(default=DEFAULT_NON_SCORING)
    # Per-domain circuit breaker: `breaker_addresses` distinct addresses of one domain with a scored
    # failure within `breaker_window` open it for `breaker_freeze`; 0 addresses: no breaker.
    breaker_addresses: int = 100
    breaker_window: int = 600
    breaker_freeze: int = DAY
    # One signed VERP address (or token) scores an address once within this window, however often its
    # bounce is replayed: the VERP validity (max_age_days) plus the day it was signed and a day of skew.
    replay_window: int = 16 * DAY

    def day(self, now: float) -> int:
        """The day number the daily rule uses for `now`."""
        return int(now // self.day_length)

    @property
    def threshold(self) -> int:
        return self.hard_threshold if self.rule is Rule.DAILY else self.count_threshold


@dataclass(frozen=True, slots=True)
class Assessment:
    effect: Effect
    # Why a failure is not scored ("non-scoring reason", "forged" ...); empty when it is.
    why: str = ""


def assess(kind: BounceKind, reason: Reason, rules: Rules, *, forged: bool = False) -> Assessment:
    """Decide what one failure of one address contributes, before any counter is looked at."""
    if forged:
        return Assessment(Effect.NONE, "forged")
    if reason in rules.non_scoring:
        return Assessment(Effect.NONE, f"reason {reason.value} says nothing about the address")
    if kind is BounceKind.PERMANENT:
        return Assessment(Effect.HARD)
    if kind is BounceKind.TEMPORARY:
        return Assessment(Effect.SOFT)
    return Assessment(Effect.NONE, "kind unknown")


@dataclass(frozen=True, slots=True)
class AddressState:
    """The counters of one address, with the time each one would be dropped by its TTL."""

    state: State = State.ACTIVE
    soft_count: int = 0
    soft_expires: float | None = None
    hard_score: int = 0
    hard_day: int | None = None
    hard_expires: float | None = None
    # The times of the hard events inside the count rule's window.
    hits: tuple[float, ...] = ()
    hits_expires: float | None = None

    def at(self, now: float, rules: Rules) -> AddressState:
        """The state as Redis would show it at `now`: expired counters are gone."""
        s = self
        if s.soft_expires is not None and now >= s.soft_expires:
            s = replace(s, soft_count=0, soft_expires=None)
        if s.hard_expires is not None and now >= s.hard_expires:
            s = replace(s, hard_score=0, hard_day=None, hard_expires=None)
        if s.hits_expires is not None and now >= s.hits_expires:
            s = replace(s, hits=(), hits_expires=None)
        return s

    def score(self, rules: Rules) -> int:
        return self.hard_score if rules.rule is Rule.DAILY else len(self.hits)


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one event: the new state and what happened."""

    state: AddressState
    scored: bool = False
    # A soft counter reached its threshold and became one hard event.
    converted: bool = False
    # The address went from active to disabled-bounces with this event.
    disabled: bool = False
    # The threshold is reached (in observe mode: the address *would* be disabled).
    reached: bool = False
    why: str = ""


def step(current: AddressState, effect: Effect, now: float, rules: Rules, *, frozen: bool = False) -> Step:
    """Apply one assessed failure at `now`. Mirrors store/lua/record.lua line by line."""
    s = current.at(now, rules)
    if effect is Effect.NONE:
        return Step(s)
    if frozen:
        return Step(s, why="domain circuit breaker open")
    if s.state is not State.ACTIVE:
        return Step(s, why=f"address is {s.state.value}")
    converted = False
    if effect is Effect.SOFT:
        count = s.soft_count + 1
        if count < rules.soft_threshold:
            return Step(replace(s, soft_count=count, soft_expires=now + rules.soft_window), scored=True)
        s = replace(s, soft_count=0, soft_expires=None)
        converted = True
    if rules.rule is Rule.DAILY:
        today = rules.day(now)
        if s.hard_day != today:
            s = replace(s, hard_score=s.hard_score + 1, hard_day=today, hard_expires=now + rules.quiet)
    else:
        hits = (*(t for t in s.hits if t > now - rules.count_window), now)
        s = replace(s, hits=hits, hits_expires=now + rules.count_window)
    reached = s.score(rules) >= rules.threshold
    disabled = reached and rules.mode is Mode.ENFORCE
    if disabled:
        s = replace(s, state=State.DISABLED_BOUNCES)
    return Step(s, scored=True, converted=converted, disabled=disabled, reached=reached)


def replay(events: Iterable[tuple[float, Effect]], rules: Rules) -> AddressState:
    """The state after a sequence of (now, effect) events, from a fresh address."""
    s = AddressState()
    for now, effect in events:
        s = step(s, effect, now, rules).state
    return s


# --- Per-domain circuit breaker (store/lua/breaker.lua runs the same machine) ---


@dataclass(frozen=True, slots=True)
class Breaker:
    """One recipient domain's breaker: the addresses with a scored failure in the window, by the time
    of their last one, and while open, the time it closes (the frozen key's TTL)."""

    failing: tuple[tuple[str, float], ...] = ()
    open_until: float | None = None
    opened_with: int = 0  # distinct addresses when it opened

    def is_open(self, now: float) -> bool:
        return self.open_until is not None and now < self.open_until


@dataclass(frozen=True, slots=True)
class Trip:
    breaker: Breaker
    open: bool  # scoring is frozen for this failure
    opened: bool  # this failure opened the breaker
    distinct: int  # distinct failing addresses in the window


def trip(current: Breaker, address: str, now: float, rules: Rules) -> Trip:
    """Count one scored failure of `address` against its domain's breaker at `now`.

    When `breaker_addresses` distinct addresses failed within `breaker_window`, the breaker opens for
    `breaker_freeze` seconds and the window starts afresh; while open, failures are not counted.
    """
    if current.is_open(now):
        return Trip(current, open=True, opened=False, distinct=current.opened_with)
    # Entries older than the window drop out (and with them, at the latest, the key's TTL runs out).
    kept = {a: t for a, t in current.failing if t > now - rules.breaker_window}
    kept[address] = now
    failing = tuple(sorted(kept.items(), key=lambda pair: (pair[1], pair[0])))
    if len(failing) >= rules.breaker_addresses:
        opened = Breaker((), now + rules.breaker_freeze, len(failing))
        return Trip(opened, open=True, opened=True, distinct=len(failing))
    return Trip(Breaker(failing, None), open=False, opened=False, distinct=len(failing))
