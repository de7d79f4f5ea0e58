"""The verdict on a recipient address of the bounce domain, at RCPT: decided here, once.

The milter, the LMTP/SMTP listener and the policy service each receive `RCPT TO:<bounces+...@bounce
domain>` and must give the same answer: take a bounce to a valid (or valid token) VERP address; refuse a
forged or expired one with 550 5.7.1 in enforce mode, or take it and record it as forged, never scored,
where refusing is not allowed (observe mode; the milter on Postfix's own or already queued mail); leave
an address of the domain that is no VERP address to the adapter's own rule (the listener's plain bounce
address, the policy service's protected recipients). Each adapter only translates the verdict into its
protocol. A forged address is a guess at a tag (core/throttle.py counts them); an expired one is a late
bounce, authentic, and is not counted.

A message that reaches the service without a verdict from RCPT (the IMAP scanner, the HTTP API, the CLI)
gets its verdict from `received`: "forged" is decided by these two functions only, and the service records
what the verdict says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bouncekeeper.core.verp import VerpResult, VerpStatus

# The refusal every adapter gives a forged or expired bounce address in enforce mode (RFC 3463 x.7.1:
# delivery not authorised).
REFUSE_CODE = "550"
REFUSE_STATUS = "5.7.1"


class Answer(StrEnum):
    ACCEPT = "accept"  # a bounce to one of our VERP addresses: take it, classify and record it
    ACCEPT_FORGED = "accept-forged"  # take it and record it as forged: never scored
    REFUSE = "refuse"  # 550 5.7.1
    NOT_VERP = "not-verp"  # no VERP address of ours: the adapter's own rule decides


@dataclass(frozen=True, slots=True)
class RcptVerdict:
    answer: Answer
    verp: VerpResult
    # A forged address refused where the forgery limits apply: counts towards them (core/throttle.py).
    guess: bool = False

    @property
    def status(self) -> VerpStatus:
        return self.verp.status

    @property
    def kind(self) -> str:
        """valid, token (a valid multi-recipient token address), forged, expired or not_verp."""
        return "token" if self.verp.token and self.status is VerpStatus.VALID else self.status.value

    @property
    def forged(self) -> bool:
        """Taken, but recorded as forged and never scored."""
        return self.answer is Answer.ACCEPT_FORGED

    def refusal(self) -> tuple[str, str, str]:
        """The (code, status, text) of a REFUSE."""
        return REFUSE_CODE, REFUSE_STATUS, f"Not a valid bounce address ({self.status})"


def bounce_rcpt(
    result: VerpResult, *, enforce: bool, may_refuse: bool = True, guarded: bool = True
) -> RcptVerdict:
    """The verdict on one decoded bounce-domain address.

    `may_refuse`: whether a refusal reaches the client that sent the bounce (False for the milter on
    Postfix's own or already queued mail: a refusal there would be a bounce from our own queue).
    `guarded`: whether the forgery limits apply to the client (not to trusted relays or local mail).
    """
    status = result.status
    if status is VerpStatus.VALID:
        return RcptVerdict(Answer.ACCEPT, result)
    if status is VerpStatus.NOT_VERP:
        return RcptVerdict(Answer.NOT_VERP, result)
    if enforce and may_refuse:
        return RcptVerdict(Answer.REFUSE, result, guess=guarded and status is VerpStatus.FORGED)
    return RcptVerdict(Answer.ACCEPT_FORGED, result)


def received(result: VerpResult, *, vouch_expired: bool = False) -> RcptVerdict:
    """The verdict on the decoded bounce-domain address of a message that is already here and can no longer
    be refused (the IMAP scanner, the HTTP API, the CLI): a forged or expired address is taken and recorded
    as forged. `vouch_expired`: the source vouches for an expired signature, which is authentic but old (an
    operator ingesting old bounces from files); from the network an expired address may be a replay."""
    if vouch_expired and result.status is VerpStatus.EXPIRED:
        return RcptVerdict(Answer.ACCEPT, result)
    return bounce_rcpt(result, enforce=False, may_refuse=False, guarded=False)
