"""An SMTP-time failure (`bouncekeeper record`, `POST /smtp-failures`) and the same reply inside a bounce
are judged by one function, so they get the same kind and reason (docs/decisions.md)."""

from __future__ import annotations

import pytest

from bouncekeeper.core.classify import classify, judge_smtp_reply
from bouncekeeper.core.model import BounceKind, MessageType, Reason
from tests.support.dsn import postfix_dsn

RCPT = "alice@example.com"
P, T, U = BounceKind.PERMANENT, BounceKind.TEMPORARY, BounceKind.UNKNOWN

# (code, status, text, kind, reason). The comments name the answers that changed when the SMTP-time
# judgement stopped keeping tables of its own (docs/redis.md, "SMTP-time failures").
CASES = [
    (550, "5.1.1", "user unknown", P, Reason.USERUNKNOWN),
    (550, None, "user unknown", P, Reason.USERUNKNOWN),
    (550, None, "", U, Reason.UNDEFINED),  # was permanent: a bare 550 says nothing about the address
    (450, None, "mailbox unavailable", T, Reason.USERUNKNOWN),  # was permanent: a 4xx is retried
    (421, None, "service not available", T, Reason.TOOMANYCONN),  # was undefined
    (452, "4.2.2", "mailbox full", T, Reason.MAILBOXFULL),
    (550, "5.7.1", "message refused", T, Reason.BLOCKED),
    (550, "5.7.1", "", T, Reason.REJECTED),  # was blocked: x.7.1 alone is the generic table's
    (554, "5.7.1", "rejected: listed at zen.spamhaus.org", T, Reason.BLOCKED),
    (550, None, "message looks like spam", T, Reason.SPAMDETECTED),
    (550, "5.1.1", "blocked by Spamhaus", T, Reason.BLOCKED),
    (450, "4.7.1", "greylisted, try again later", T, Reason.SYSTEMERROR),  # was blocked
    (552, "5.2.2", "over quota", T, Reason.MAILBOXFULL),
    (552, "5.3.4", "message too big", T, Reason.MESGTOOBIG),
    (550, "5.7.26", "unauthenticated email is not accepted (DMARC)", T, Reason.AUTHFAILURE),
    (550, "5.5.3", "too many recipients", T, Reason.EXCEEDLIMIT),  # was toomanyconn; systemerror alone
    (550, "5.7.25", "reverse DNS validation failed", T, Reason.BLOCKED),  # was authfailure
    (550, None, "Sender address rejected: Domain not found", T, Reason.REJECTED),  # was userunknown
    (553, None, "", P, Reason.USERUNKNOWN),  # was undefined: RFC 5321 "mailbox name not allowed"
]


@pytest.mark.parametrize(("code", "status", "text", "kind", "reason"), CASES)
def test_an_smtp_time_reply_is_judged_by_the_bounce_tables(
    code: int, status: str | None, text: str, kind: BounceKind, reason: Reason
) -> None:
    judged = judge_smtp_reply(RCPT, code, status, text)
    assert (judged.recipient, judged.kind, judged.reason) == (RCPT, kind, reason)
    assert (judged.reply_code, judged.status) == (code, status)


# A bounce carries a Status field and is final; a 4xx inside it is the one difference (next test).
FINAL = [c for c in CASES if c[1] and c[2] and c[0] >= 500]


@pytest.mark.parametrize(("code", "status", "text", "kind", "reason"), FINAL)
def test_the_same_reply_inside_a_bounce_gets_the_same_kind_and_reason(
    code: int, status: str, text: str, kind: BounceKind, reason: Reason
) -> None:
    verdict = classify(postfix_dsn(RCPT, to="bounces@app.example", status=status, reply=str(code), text=text))
    assert verdict.message_type is MessageType.BOUNCE
    (failure,) = verdict.failures
    judged = judge_smtp_reply(RCPT, code, status, text)
    assert (failure.kind, failure.reason) == (judged.kind, judged.reason) == (kind, reason)


@pytest.mark.parametrize(
    ("code", "status"),
    [(250, None), (354, None), (600, None), (550, "five"), (550, "5.1"), (550, "5.1.1.2"), (550, "15.1.1")],
)
def test_what_is_no_failure_reply_is_refused(code: int, status: str | None) -> None:
    with pytest.raises(ValueError, match="not"):
        judge_smtp_reply(RCPT, code, status, "")
