"""The RCPT verdict on a bounce-domain address, the one the milter, the listener and the policy service
translate (docs/decisions.md). The adapters' tests check each translation; tests/test_parity.py the whole."""

from __future__ import annotations

import pytest

from bouncekeeper.core.rcpt import Answer, bounce_rcpt, received
from bouncekeeper.core.verp import VerpResult, VerpStatus

VALID = VerpResult(VerpStatus.VALID, recipient="a@example.com", day=20000)
TOKEN = VerpResult(VerpStatus.VALID, token="abcdefghijklmnop", day=20000)
FORGED = VerpResult(VerpStatus.FORGED)
EXPIRED = VerpResult(VerpStatus.EXPIRED, recipient="a@example.com", day=19000)
NOT_VERP = VerpResult(VerpStatus.NOT_VERP)


@pytest.mark.parametrize(
    ("result", "enforce", "may_refuse", "answer", "kind", "guess"),
    [
        (VALID, True, True, Answer.ACCEPT, "valid", False),
        (TOKEN, True, True, Answer.ACCEPT, "token", False),
        (FORGED, True, True, Answer.REFUSE, "forged", True),
        (EXPIRED, True, True, Answer.REFUSE, "expired", False),  # a late bounce is no guess
        (FORGED, False, True, Answer.ACCEPT_FORGED, "forged", False),  # observe changes nothing
        (EXPIRED, False, True, Answer.ACCEPT_FORGED, "expired", False),
        (FORGED, True, False, Answer.ACCEPT_FORGED, "forged", False),  # Postfix's own or queued mail
        (NOT_VERP, True, True, Answer.NOT_VERP, "not_verp", False),
    ],
)
def test_the_verdict(
    result: VerpResult, enforce: bool, may_refuse: bool, answer: Answer, kind: str, guess: bool
) -> None:
    verdict = bounce_rcpt(result, enforce=enforce, may_refuse=may_refuse)
    assert (verdict.answer, verdict.kind, verdict.guess) == (answer, kind, guess)
    assert verdict.forged is (answer is Answer.ACCEPT_FORGED)
    assert verdict.verp is result


def test_a_refusal_names_the_status_and_an_unguarded_client_makes_no_guess() -> None:
    assert bounce_rcpt(EXPIRED, enforce=True).refusal() == (
        "550",
        "5.7.1",
        "Not a valid bounce address (expired)",
    )
    assert not bounce_rcpt(FORGED, enforce=True, guarded=False).guess


@pytest.mark.parametrize(
    ("result", "vouch_expired", "answer"),
    [
        (VALID, False, Answer.ACCEPT),
        (TOKEN, False, Answer.ACCEPT),
        (FORGED, False, Answer.ACCEPT_FORGED),
        (FORGED, True, Answer.ACCEPT_FORGED),  # no source vouches for a wrong signature
        (EXPIRED, False, Answer.ACCEPT_FORGED),  # from the network: maybe a replay
        (EXPIRED, True, Answer.ACCEPT),  # old bounces an operator feeds from files
        (NOT_VERP, True, Answer.NOT_VERP),
    ],
)
def test_a_message_already_received_is_never_refused_and_only_a_vouched_expiry_is_authentic(
    result: VerpResult, vouch_expired: bool, answer: Answer
) -> None:
    verdict = received(result, vouch_expired=vouch_expired)
    assert (verdict.answer, verdict.guess) == (answer, False)
    assert verdict.verp is result
