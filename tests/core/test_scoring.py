"""The policy as a pure function of (state, effect, now): explicit times, no clock, no Redis."""

from __future__ import annotations

import pytest

from bouncekeeper.core.model import BounceKind, Reason
from bouncekeeper.core.scoring import (
    DAY,
    AddressState,
    Breaker,
    Effect,
    Mode,
    Rule,
    Rules,
    State,
    assess,
    replay,
    step,
    trip,
)

T0 = 1_763_769_600.0  # 2025-11-22 00:00:00 UTC
ENFORCE = Rules(mode=Mode.ENFORCE)


def test_hard_score_rises_once_per_utc_day_not_per_bounce() -> None:
    s = replay([(T0 + 60 * i, Effect.HARD) for i in range(10)], ENFORCE)
    assert s.hard_score == 1
    s = replay([(T0, Effect.HARD), (T0 + DAY - 1, Effect.HARD), (T0 + DAY, Effect.HARD)], ENFORCE)
    assert s.hard_score == 2


def test_the_day_boundary_is_midnight_utc_not_24_hours_after_the_first_bounce() -> None:
    late = T0 + DAY - 60  # 23:59 on day one
    s = replay([(late, Effect.HARD), (late + 120, Effect.HARD)], ENFORCE)  # 00:01 on day two
    assert s.hard_score == 2


def test_address_is_disabled_on_the_day_the_score_reaches_the_threshold() -> None:
    events = [(T0 + d * DAY, Effect.HARD) for d in range(5)]
    s = AddressState()
    states = []
    for now, effect in events:
        result = step(s, effect, now, ENFORCE)
        s = result.state
        states.append((result.state.hard_score, result.disabled))
    assert states == [(1, False), (2, False), (3, False), (4, False), (5, True)]
    assert s.state is State.DISABLED_BOUNCES


def test_observe_mode_reaches_the_threshold_but_disables_nothing() -> None:
    rules = Rules(mode=Mode.OBSERVE)
    s = AddressState()
    for d in range(5):
        result = step(s, Effect.HARD, T0 + d * DAY, rules)
        s = result.state
    assert result.reached
    assert not result.disabled
    assert s.state is State.ACTIVE
    assert s.hard_score == 5


def test_score_resets_after_quiet_days_without_a_rise() -> None:
    s = replay([(T0, Effect.HARD), (T0 + DAY, Effect.HARD)], ENFORCE)
    assert s.at(T0 + DAY + 7 * DAY - 1, ENFORCE).hard_score == 2
    assert s.at(T0 + DAY + 7 * DAY, ENFORCE).hard_score == 0
    s = replay([(T0, Effect.HARD), (T0 + DAY, Effect.HARD), (T0 + 9 * DAY, Effect.HARD)], ENFORCE)
    assert s.hard_score == 1


def test_a_bounce_that_does_not_raise_the_score_does_not_extend_the_quiet_period() -> None:
    s = replay([(T0, Effect.HARD), (T0 + 3600, Effect.HARD)], ENFORCE)
    assert s.hard_expires == T0 + 7 * DAY


def test_disabled_never_expires_and_stops_scoring() -> None:
    s = replay([(T0 + d * DAY, Effect.HARD) for d in range(5)], ENFORCE)
    later = s.at(T0 + 400 * DAY, ENFORCE)
    assert later.state is State.DISABLED_BOUNCES
    result = step(later, Effect.HARD, T0 + 400 * DAY, ENFORCE)
    assert not result.scored
    assert "disabled-bounces" in result.why


def test_soft_threshold_within_window_becomes_one_hard_event_and_restarts() -> None:
    s = AddressState()
    results = []
    for i in range(6):
        r = step(s, Effect.SOFT, T0 + i * 3600, ENFORCE)
        s = r.state
        results.append((s.soft_count, s.hard_score, r.converted))
    assert results == [
        (1, 0, False),
        (2, 0, False),
        (3, 0, False),
        (4, 0, False),
        (0, 1, True),
        (1, 1, False),
    ]


def test_soft_counter_expires_a_window_after_the_last_soft_failure() -> None:
    # Four soft failures spaced 6 days apart: each one keeps the counter alive (expiry after the *last*).
    s = replay([(T0 + i * 6 * DAY, Effect.SOFT) for i in range(4)], ENFORCE)
    assert s.soft_count == 4
    s = replay([(T0, Effect.SOFT), (T0 + 7 * DAY, Effect.SOFT)], ENFORCE)
    assert s.soft_count == 1


def test_count_rule_disables_after_n_hard_bounces_within_the_window() -> None:
    rules = Rules(mode=Mode.ENFORCE, rule=Rule.COUNT, count_threshold=3, count_window=7 * DAY)
    same_day = replay([(T0, Effect.HARD), (T0 + 1, Effect.HARD), (T0 + 2, Effect.HARD)], rules)
    assert same_day.state is State.DISABLED_BOUNCES
    spread = replay([(T0, Effect.HARD), (T0 + 4 * DAY, Effect.HARD), (T0 + 8 * DAY, Effect.HARD)], rules)
    assert spread.state is State.ACTIVE
    assert len(spread.hits) == 2


def test_frozen_domain_and_none_effect_change_nothing() -> None:
    s = replay([(T0, Effect.SOFT)], ENFORCE)
    assert step(s, Effect.HARD, T0 + 1, ENFORCE, frozen=True).state == s
    assert not step(s, Effect.HARD, T0 + 1, ENFORCE, frozen=True).scored
    assert step(s, Effect.NONE, T0 + 1, ENFORCE).state == s


@pytest.mark.parametrize(
    ("kind", "reason", "effect"),
    [
        (BounceKind.PERMANENT, Reason.USERUNKNOWN, Effect.HARD),
        (BounceKind.PERMANENT, Reason.HOSTUNKNOWN, Effect.HARD),
        (BounceKind.TEMPORARY, Reason.MAILBOXFULL, Effect.SOFT),
        (BounceKind.TEMPORARY, Reason.SPAMDETECTED, Effect.NONE),
        (BounceKind.PERMANENT, Reason.BLOCKED, Effect.NONE),
        (BounceKind.TEMPORARY, Reason.AUTHFAILURE, Effect.NONE),
        (BounceKind.TEMPORARY, Reason.MESGTOOBIG, Effect.NONE),
        (BounceKind.TEMPORARY, Reason.TOOMANYCONN, Effect.NONE),
        (BounceKind.TEMPORARY, Reason.VACATION, Effect.NONE),
        (BounceKind.TEMPORARY, Reason.DELAYED, Effect.NONE),
        (BounceKind.UNKNOWN, Reason.UNDEFINED, Effect.NONE),
    ],
)
def test_assess_scores_only_failures_about_the_address(
    kind: BounceKind, reason: Reason, effect: Effect
) -> None:
    assert assess(kind, reason, ENFORCE).effect is effect


def test_assess_never_scores_forged_and_honours_a_configured_list() -> None:
    assert assess(BounceKind.PERMANENT, Reason.USERUNKNOWN, ENFORCE, forged=True).effect is Effect.NONE
    strict = Rules(non_scoring=frozenset({Reason.MAILBOXFULL}))
    assert assess(BounceKind.TEMPORARY, Reason.MAILBOXFULL, strict).effect is Effect.NONE
    assert assess(BounceKind.TEMPORARY, Reason.SPAMDETECTED, strict).effect is Effect.SOFT


BREAKER = Rules(breaker_addresses=3, breaker_window=600, breaker_freeze=3600)


def test_breaker_opens_at_the_threshold_of_distinct_addresses_in_the_window() -> None:
    b = Breaker()
    trips = []
    for n, address in enumerate(["a@d", "a@d", "b@d", "c@d", "d@d"]):
        t = trip(b, address, T0 + n, BREAKER)
        b = t.breaker
        trips.append((t.open, t.opened, t.distinct))
    # The same address twice counts once; the third distinct one opens it; then it stays open.
    assert trips == [
        (False, False, 1),
        (False, False, 1),
        (False, False, 2),
        (True, True, 3),
        (True, False, 3),
    ]
    assert not b.is_open(T0 + 3 + 3600)
    assert trip(b, "e@d", T0 + 3 + 3600, BREAKER).distinct == 1


def test_breaker_forgets_failures_older_than_the_window() -> None:
    b = Breaker()
    for n, address in enumerate(["a@d", "b@d"]):
        b = trip(b, address, T0 + n * 599, BREAKER).breaker
    t = trip(b, "c@d", T0 + 600, BREAKER)  # a@d (at T0) is exactly one window old: out
    assert (t.open, t.distinct) == (False, 2)
