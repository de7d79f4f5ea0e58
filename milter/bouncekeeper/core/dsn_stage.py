"""The DSN stage of the triage: each recipient block of a message's delivery-status parts (RFC 3464, RFC
6533) read as a failure, a delay or a success.

core.dsn reads the fields; this decides what each block says: its Action mapped onto RFC 3464's five,
the text that explains it (the Diagnostic-Code, completed from the human-readable report where it says
too little), and, through core.failure, its status, reason and kind.
"""

from __future__ import annotations

import re

from bouncekeeper.core import dsn
from bouncekeeper.core.addresses import normalise
from bouncekeeper.core.failure import Evidence, build
from bouncekeeper.core.limits import MAX_RECIPIENTS, note
from bouncekeeper.core.message import Message
from bouncekeeper.core.model import Delay, Failure, Stage
from bouncekeeper.core.rules import bodies, sendmail

_FAILED_ACTIONS = ("fail", "undeliver", "bounce", "reject", "error", "deleted", "permanent")
SUCCESS_ACTIONS = ("delivered", "relayed", "expanded")


class Found:
    """What the delivery-status parts said."""

    __slots__ = ("delays", "failures", "groups", "successes")

    def __init__(self) -> None:
        self.failures: list[Failure] = []
        self.delays: list[Delay] = []
        self.successes = 0
        self.groups = 0  # per-recipient groups the parts held, whatever each said


def read(msg: Message, limits: list[str]) -> Found:
    """Every recipient block of the message's delivery-status parts, at most MAX_RECIPIENTS."""
    found = Found()
    seen: set[tuple[str, str]] = set()
    for report in dsn.reports(msg.text(part) for part in msg.dsn_parts):
        found.groups += len(report.recipients)
        if report.cut:
            note(limits, "dsn")
        for rcpt in report.recipients:
            if len(found.failures) + len(found.delays) + found.successes >= MAX_RECIPIENTS:
                note(limits, "recipients")
                break
            address = _address(rcpt.final_recipient) or _address(rcpt.original_recipient)
            if address is None:
                continue
            action = _action(rcpt.action, rcpt.status)
            if action in SUCCESS_ACTIONS:
                found.successes += 1
                continue
            if action is None or (address, action) in seen:
                continue  # MTAs repeat a recipient's block (one per MX tried): the first tells
            seen.add((address, action))
            failure = _recipient(msg, rcpt, address, action)
            if isinstance(failure, Delay):
                found.delays.append(failure)
            else:
                found.failures.append(failure)
    return found


def _recipient(msg: Message, rcpt: dsn.RecipientReport, address: str, action: str) -> Failure:
    """One failed or delayed recipient's block, explained from its own fields first."""
    diagnostic = rcpt.diagnostic
    whole_reply = ""
    if _CONTINUED.match(diagnostic):
        whole_reply = sendmail.whole_reply(diagnostic, msg.human_text())
    if rcpt.status_comment and _has_words(rcpt.status_comment):
        diagnostic = f"{diagnostic} {rcpt.status_comment}".strip()
    if not diagnostic or _is_bare_code(diagnostic):
        context = bodies.context_for(msg.human_text(), address, rcpt.final_recipient)
        text = f"{diagnostic} {context}".strip()
    else:
        text = diagnostic
    fallback = "" if _has_words(text) else msg.human_text()
    # No Action and no Status: a text that reads as a delay is one.
    if action == "failed" and rcpt.action is None and rcpt.status is None and bodies.reads_as_delay(text):
        action = "delayed"
    return build(
        Evidence(
            address,
            text,
            rcpt.status,
            Stage.DSN,
            diagnostic=whole_reply or diagnostic,
            remote_mta=rcpt.remote_mta,
            action=action,
            fallback=fallback,
            report=msg.human_text,
            whole_reply=whole_reply,
            program_exit=sendmail.program_exit(rcpt.diagnostic_type, rcpt.diagnostic),
        )
    )


def _action(action: str | None, status_code: str | None) -> str | None:
    """Map real-world Action values onto RFC 3464's five; infer a missing one from Status."""
    if action:
        if action.startswith("delay"):
            return "delayed"
        for success in SUCCESS_ACTIONS:
            if action.startswith(success[:5]):
                return success
        if action.startswith(_FAILED_ACTIONS):
            return "failed"
    if status_code:
        if status_code[0] == "2":
            return "delivered"
        return "failed"
    return "failed" if action is None else None


# The first line of a multi-line SMTP reply ("550-5.7.1 ..."; RFC 5321 section 4.2.1): Sendmail's
# Diagnostic-Code holds only that line (sendmail.whole_reply).
_CONTINUED = re.compile(r"[245]\d\d-")


# Compiled once: re.search(str, ...) looks its pattern up in re's cache at every call, and these run for
# every recipient of a report.
_TWO_WORDS = re.compile(r"[A-Za-z]{3,}.*[A-Za-z]{3,}")
_A_WORD = re.compile(r"[A-Za-z]{3}")


def _has_words(text: str) -> bool:
    return bool(_TWO_WORDS.search(text))


def _is_bare_code(diagnostic: str) -> bool:
    return not _A_WORD.search(diagnostic)


def _address(value: str | None) -> str | None:
    if not value:
        return None
    return normalise(value)
