"""One recipient's failure, from the texts and codes that report on it: its status, reason and kind.

Every stage that finds a failed recipient (a DSN's recipient block, a plain-text report's lines about
an address, flufl.bounce's find, an SES notice, an SMTP reply at submission) describes what it read as
an `Evidence` and `build` judges it: one place that turns words and codes into a reason, and a reason
into a kind, so a refusal means one thing whichever way it reaches us.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any, NamedTuple

from bouncekeeper.core import dsn, rules
from bouncekeeper.core.limits import MAX_EXPLAIN_CHARS
from bouncekeeper.core.model import ADDRESS_REASONS, BounceKind, Delay, Failure, Reason, Stage
from bouncekeeper.core.rules import amazonses, bodies, status


class Evidence(NamedTuple):
    """What reports on one recipient's failure. (A NamedTuple, as frozen as a dataclass: one is made per
    recipient, four times faster than a frozen dataclass's __init__.)"""

    address: str
    text: str  # the text that reports on this recipient (a Diagnostic-Code, the lines about it)
    status_field: str | None  # the report's Status field for it
    stage: Stage
    diagnostic: str = ""  # what the Failure keeps as its diagnostic
    remote_mta: str | None = None
    action: str | None = "failed"
    # The whole report, read when `text` says too little.
    fallback: str = ""
    # The whole human-readable report, read only when the SMTP command matters and `text` does not name it.
    report: Callable[[], str] | None = None
    # Every line of a multi-line reply whose Diagnostic-Code holds only its first (rules.sendmail).
    whole_reply: str = ""
    # The diagnostic is a local delivery program's exit status ("X-Unix; 127": sendmail.program_exit).
    program_exit: bool = False
    # False for a reply seen once at submission (judge_smtp_reply): no MTA retried it until it gave up.
    retried: bool = True


class _Reading(NamedTuple):
    """The reason read from a failure's texts, how sure (rules.explain's strength), and the codes and the
    text it was read from. (A NamedTuple: its class costs a tenth of a frozen dataclass's at import.)"""

    reason: Reason
    strength: int
    status_code: str | None
    reply_code: int | None
    text: str


def build(evidence: Evidence) -> Failure:
    """One recipient's failure from what reports on it."""
    found = _read_reason(evidence)
    status_code, reply_code, text = found.status_code, found.reply_code, found.text
    dsn_class = _class_of(status_code, reply_code)
    command, own = _smtp_command(evidence, found)
    reason = found.reason
    if reason in ADDRESS_REASONS and (own == "MAIL" or _about_the_sender(status_code, text)):
        # "550 5.1.0 <app@sender.test>: Sender address rejected: User unknown", "553 5.1.8 Domain of
        # sender address does not exist": the words of a dead address, about our sender. The recipient
        # was never looked at (RFC 5321: MAIL FROM comes before any RCPT).
        reason = Reason.REJECTED
    reason = _user_unknown_by_stage(reason, status_code, reply_code, command, text)
    if evidence.action == "delayed":
        kind = BounceKind.TEMPORARY
        reason = Reason.DELAYED if reason is Reason.UNDEFINED else reason
    else:
        if evidence.retried and dsn_class is BounceKind.TEMPORARY and reason in _GAVE_UP_ON:
            # A final failure with a 4.x.x status (RFC 3463 section 3.1: "persistent transient"): the MTA
            # gave up retrying when the queue lifetime ran out; the last try's vague error is not the why.
            reason = Reason.EXPIRED
        kind = _kind(reason, dsn_class)
    # A delayed recipient's report reads as a failure's does; only its type says it is a warning.
    made = Delay if evidence.action == "delayed" else Failure
    return made(
        recipient=evidence.address,
        kind=kind,
        reason=reason,
        dsn_class=dsn_class,
        status=status_code,
        reply_code=reply_code,
        diagnostic=" ".join(evidence.diagnostic.split())[:1000],
        remote_mta=evidence.remote_mta,
        stage=evidence.stage,
        action=evidence.action,
        smtp_command=command,
    )


def delayed(failure: Failure) -> Delay:
    """A failure that a delay notice reports (flufl.bounce's and the plain-text readers find addresses,
    the notice's words say the MTA keeps trying): the same report as a Delay, its reason `delayed`."""
    values: dict[str, Any] = {name: getattr(failure, name) for name in _FIELDS}
    return Delay(**(values | {"action": "delayed", "reason": Reason.DELAYED}))


_FIELDS = tuple(f.name for f in fields(Failure))


def _read_reason(evidence: Evidence) -> _Reading:
    """The reason from `text`, else from the whole reply or the whole report when they say more."""
    status_code = _best_status(evidence.status_field, evidence.text)
    text = amazonses.remote_reply(evidence.text)
    reply_code = status.reply_code_in(text)
    reason, strength = rules.explain(text[:MAX_EXPLAIN_CHARS], status_code, reply_code)
    found = _Reading(reason, strength, status_code, reply_code, text)
    whole_reply = evidence.whole_reply
    if strength < 2 and whole_reply:
        # The first line of a multi-line reply said little (a generic code, a vague word): its other
        # lines may say more. Only then: later lines are often hedged advice ("the domain may not exist,
        # or be blacklisted"), which must not outrank a first line that named the reason.
        more_reason, more_strength = rules.explain(whole_reply[:MAX_EXPLAIN_CHARS], status_code, reply_code)
        if more_strength > strength:
            found = _Reading(more_reason, more_strength, status_code, reply_code, whole_reply)
    fallback = evidence.fallback
    if (
        found.strength < 2
        and fallback
        and fallback != found.text
        and not (found.strength == 1 and reply_code)
    ):
        # The lines next to the address said little; the whole report may say more (one reason for all).
        # Not when they hold the remote server's own reply and a phrase: the rest is boilerplate.
        fb_status = status_code or dsn.status_of(fallback)
        fb_reply = reply_code or status.reply_code_in(fallback)
        fb_reason, fb_strength = rules.explain(fallback[:MAX_EXPLAIN_CHARS], fb_status, fb_reply)
        if fb_strength > found.strength:
            found = _Reading(fb_reason, fb_strength, fb_status, fb_reply, fallback)
    if evidence.program_exit and found.strength < 2:
        # A local delivery program's exit status (sendmail.program_exit), which a vague line of its
        # output ("Permission denied") does not explain better (sisimai err/make-test-35: mailererror).
        found = found._replace(reason=Reason.MAILERERROR)
    return found


def _smtp_command(evidence: Evidence, found: _Reading) -> tuple[str | None, str | None]:
    """The SMTP command the refusal answered, for the stage policy, and the one the lines about this
    recipient name (`own`), for the sender check.

    The rest of the report is read for the command only when the decision needs it: finding and
    scanning it for every recipient made the classifier ~8% slower (benchmarks/classify_speed.py).
    `own` is the command named in the lines about this recipient (for Sendmail, its own session's
    transcript: bodies.context_for); the whole report's first command is only a guess for the stage
    policy, as a report with several recipients can hold several sessions, so it never turns a
    recipient into our sender."""
    command = bodies.smtp_command(found.text)
    own = command
    if command is None and evidence.report is not None and found.reason in ADDRESS_REASONS:
        whole = evidence.report()
        own = bodies.smtp_command(bodies.context_for(whole, evidence.address))
        command = own or bodies.smtp_command(whole)
    return command, own


# Codes and words that say the refusal is about the envelope sender: RFC 3463 x.1.7 "bad sender's mailbox
# address syntax", x.1.8 "bad sender's system address", RFC 7505 x.7.27 "sender address has null MX";
# Postfix "Sender address rejected: ...", Sendmail "Domain of sender address ... does not exist", Exim
# "Sender verify failed".
_SENDER_STATUS = frozenset({"1.7", "1.8", "7.27"})
_SENDER_TEXT = re.compile(
    r"sender address rejected|domain of sender address|sender verif(?:y|ication) failed|"
    r"sender address has null mx|sender domain (?:not found|does not exist|unknown|must (?:exist|resolve))|"
    r"sender address (?:is )?(?:invalid|unknown|does not exist|not valid)|unknown sender|invalid sender"
)


def _about_the_sender(status_code: str | None, text: str) -> bool:
    """Whether a refusal is about our envelope sender, not the recipient (its status or its words)."""
    if status_code and status.subject_detail(status_code) in _SENDER_STATUS:
        return True
    lower = " ".join(text[:MAX_EXPLAIN_CHARS].lower().split())
    return "sender" in lower and _SENDER_TEXT.search(lower) is not None


def _stage_decides(reason: Reason, status_code: str | None) -> bool:
    """Whether _user_unknown_by_stage needs to know the SMTP command for this reason and status."""
    return reason is Reason.USERUNKNOWN and not _names_address(status_code)


def _user_unknown_by_stage(
    reason: Reason, status_code: str | None, reply_code: int | None, command: str | None, text: str
) -> Reason:
    """Whether an "unknown user" text is evidence that the address is dead: the one place that decides.

    A server knows its mailboxes when it answers RCPT TO (RFC 5321 section 3.3: a 550 there is "mailbox
    unavailable"); once it has accepted the recipient and reads the message after DATA, a "user unknown"
    is what content-filtering gateways (m-FILTER, SurfControl, MXLogic, McAfee ...) say when they
    refuse the message. So, as Sisimai decides (its Reason::UserUnknown and Reason::Filtered):

    - a status that names the address (x.1.1 bad mailbox, x.1.x): dead address, whatever the stage;
    - the report says the refusal came after the message was sent (DATA): `filtered`, unless a
      provider known to refuse unknown mailboxes only after DATA says so in its own words (a dialect's
      DEAD_AT_ANY_STAGE);
    - refused at MAIL FROM: the text is about the sender (`rejected`);
    - refused at RCPT, or the report does not say at which command: the text stands, a dead address.
      Most servers refuse an unknown mailbox at RCPT, and a report that names no command ("550 unknown
      user <a@b>" relayed by a gateway, "No such user") is read by its words (docs/accuracy.md: the stage rule
      applies only when the report places the refusal after DATA). A 4xx stays temporary (_kind).
    """
    if not _stage_decides(reason, status_code):
        return reason
    if command == "DATA" and not rules.dead_at_any_stage(text):
        return Reason.FILTERED
    if command == "MAIL":
        return Reason.REJECTED
    return reason


# Vague reasons of a last temporary error that an expiry bounce repeats (greylisting's "try again",
# "connection refused", "temporary lookup failure"): the bounce's reason is that the message expired.
_GAVE_UP_ON = frozenset({Reason.NETWORKERROR, Reason.SYSTEMERROR, Reason.UNDEFINED, Reason.REJECTED})


def _names_address(status_code: str | None) -> bool:
    """x.1.1 / x.1.2 ...: the server named the address as the problem, whatever command it answered."""
    return bool(status_code) and status.subject_detail(status_code or "").startswith("1.")


def _kind(reason: Reason, dsn_class: BounceKind) -> BounceKind:
    """PERMANENT only when the address itself is dead (the shared corpus's labelling rule)."""
    if reason in ADDRESS_REASONS:
        if reason is Reason.NOTACCEPT and dsn_class is not BounceKind.PERMANENT:
            return BounceKind.TEMPORARY
        if dsn_class is BounceKind.TEMPORARY:
            return BounceKind.TEMPORARY  # a 4xx "unknown user" is a lookup failure the MTA will retry
        return BounceKind.PERMANENT
    if reason is Reason.UNDEFINED:
        return BounceKind.UNKNOWN
    return BounceKind.TEMPORARY


def _class_of(status_code: str | None, reply_code: int | None) -> BounceKind:
    first = status_code[0] if status_code else (str(reply_code)[0] if reply_code else "")
    if first == "5":
        return BounceKind.PERMANENT
    if first == "4":
        return BounceKind.TEMPORARY
    return BounceKind.UNKNOWN


# An SMTP reply with an enhanced status code (RFC 2034 section 4) in a Diagnostic-Code: at its start
# (RFC 3464 section 2.3.6 "smtp; 550 5.1.1 ..."), or quoted inside a relay's own words (Amazon SES:
# "5.1.0 - Unknown address error 550-'5.7.1 ... Access denied'").
_REMOTE_REPLY = re.compile(r"[245](?<![\w.][245])\d\d[ -]+['\"]?([245]\.\d{1,3}\.\d{1,3})\b")


def _best_status(status_field: str | None, text: str) -> str | None:
    """The Status field, unless it is the vague x.0.0 and the diagnostic names a precise code."""
    in_text = dsn.status_of(text)
    if status_field is None:
        return in_text
    remote = _REMOTE_REPLY.search(text)
    if remote and remote.group(1)[0] == status_field[0]:
        # The remote server's own reply ("550 5.1.1 ...") names its enhanced code; the Status field is
        # the reporting MTA's translation, which Sendmail derives from the reply code alone for errors
        # after DATA (550 -> 5.2.0, 552 -> 5.2.2; seen with a real Sendmail 8.17), and a relay such as
        # Amazon SES replaces with its own category (5.1.0 "unknown address" for a remote 5.7.1
        # "access denied"). RFC 3463 codes are the remote's to give: keep its own.
        return dsn.status_of(remote.group(1)) or status_field
    if (
        in_text
        and status_field.endswith(".0.0")
        and in_text[0] == status_field[0]
        and in_text != status_field
    ):
        return in_text
    return status_field
