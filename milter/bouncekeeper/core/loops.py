"""Loop and auto-reply predicates on a message's headers.

A bounce handler that answers automatic mail makes mail loops; one that scores auto-replies disables good
addresses. These predicates say why a message looks automatic (RFC 3834) or loop-prone, from headers
alone. `signals` is the one vocabulary: the classifier stores it in `Classification.loop_signals`, and
the milter's loop guard (`header_signals`, `is_loop`) writes the same words into its loop events, its
`X-Bouncekeeper-Loop` header and its log lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from bouncekeeper.core import mime

Headers = Callable[[str], str | None]

# RFC 3834 section 5: Auto-Submitted values other than "no" mark automatic mail.
_AUTO_SUBMITTED = re.compile(r"^\s*(auto-[a-z-]+|[a-z-]+)", re.IGNORECASE)
# Headers that autoresponders set instead of (or beside) Auto-Submitted. Their presence is the signal;
# X-Autoreply: yes (Courier, cPanel), X-Autorespond (Zimbra), X-Vacation, X-Mail-Autoreply (Exim
# vacation), X-AutoReply-From, X-POST-MessageClass: 9; Autoresponder (Network Solutions),
# X-FC-MachineGenerated.
AUTOREPLY_HEADERS: tuple[str, ...] = (
    "x-autoreply",
    "x-autorespond",
    "x-autoresponder",
    "x-auto-response",
    "x-vacation",
    "x-mail-autoreply",
    "x-autoreply-from",
    "x-fc-machinegenerated",
)
# Subjects of vacation/out-of-office notices in the languages seen in bounces (RFC 3834 section 3.1.5
# suggests "Auto:"; real responders use the words below).
VACATION_SUBJECT = re.compile(
    r"^\s*(?:automatische antwort|auto(?:matic)?[ -]?(?:reply|response|antwort|risposta|respuesta|réponse)|"
    r"autoreply|auto:|out of (?:the )?office|ooo\b|on vacation|vacation|away from|abwesenheit|"
    r"abwesend|r[ée]ponse automatique|absence|urlaub|respuesta autom|risposta automatica|"
    r"fuera de la oficina|afwezig|automatisch antwoord|frånvaro|poza biurem|自動返信|自动回复|不在)",
    re.IGNORECASE,
)
# Subjects of bounces and DSNs (flufl.bounce and Sisimai use the same families to spot them).
BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|return(?:ed)? to sender|delivery (?:status|failure|failed|"
    r"notification|report|problem|has failed)|failure notice|mail delivery|non[- ]?delivery|"
    r"could not be delivered|not delivered|delivery error|mail system error|bounce|rejected|"
    r"warning: could not|mail failure|error sending|nicht zustellbar|unzustellbar|fehlgeschlagen|"
    r"non remis|échec|no se pudo entregar|message not deliverable|permanent error|delivery unsuccessful|"
    r"delayed|delay|warning: |could not send|not yet delivered|mail failure|failed mail|"
    r"не доставлено|доставлен",
    re.IGNORECASE,
)
# Local parts of the daemons that send bounces (a bounce's From).
BOUNCE_SENDER_LOCAL = re.compile(
    r"^(?:mailer-daemon|post_?master|mail-daemon|mailer|mail\.daemon|mdaemon|mail-notify|mailerdaemon)$",
    re.IGNORECASE,
)
# Local parts that are never a failed recipient worth scoring: the daemons, and the automatic senders
# (no-reply, bounces) whose addresses appear in reports as the other side.
DAEMON_LOCAL = re.compile(
    r"^(?:mailer-daemon|post_?master|mail-daemon|mailer|mail\.daemon|mdaemon|mail-notify|mailerdaemon|"
    r"bounce|bounces|no-?reply|noreply|system|root)$",
    re.IGNORECASE,
)


def auto_submitted(get: Headers) -> str | None:
    """The RFC 3834 Auto-Submitted keyword, lower-cased, or None when absent or "no"."""
    value = get("auto-submitted")
    if not value:
        return None
    match = _AUTO_SUBMITTED.match(value)
    if match is None:
        return None
    keyword = match.group(1).lower()
    return None if keyword == "no" else keyword


def autoreply_header(get: Headers) -> str | None:
    """The first autoresponder header present, or a Precedence-less hint such as X-POST-MessageClass."""
    for name in AUTOREPLY_HEADERS:
        value = get(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return name
    message_class = get("x-post-messageclass")
    if message_class and "autoresponder" in message_class.lower():
        return "x-post-messageclass"
    return None


def is_vacation_subject(subject: str) -> bool:
    return bool(VACATION_SUBJECT.search(subject))


def is_null_sender(envelope_sender: str | None, return_path: str | None) -> bool:
    """RFC 5321 section 4.5.5: bounces are sent with an empty reverse-path."""
    if envelope_sender is not None:
        return envelope_sender.strip() in ("", "<>")
    if return_path is not None:
        return return_path.strip() in ("<>", "")
    return False


def signals(
    get: Headers,
    *,
    content_type: str,
    report_type: str | None,
    envelope_sender: str | None,
) -> tuple[str, ...]:
    """Why the message looks automatic or loop-prone; empty for ordinary mail."""
    found: list[str] = []
    if is_null_sender(envelope_sender, get("return-path")):
        found.append("null-sender")
    if content_type == "multipart/report":
        found.append(f"multipart-report:{report_type}" if report_type else "multipart-report")
    keyword = auto_submitted(get)
    if keyword is not None:
        found.append(f"auto-submitted:{keyword}")
    header = autoreply_header(get)
    if header is not None:
        found.append(header)
    precedence = (get("precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        found.append(f"precedence:{precedence}")
    # RFC 2369 / RFC 2919 list mail: replying to it automatically reaches a whole list.
    if get("list-id") is not None:
        found.append("list-id")
    subject = get("subject") or ""
    if subject and is_vacation_subject(subject):
        found.append("vacation-subject")
    return tuple(found)


# Signals a person can produce by accident (a subject that starts with "Vacation"): recorded with the
# others, but never enough by themselves to hold a message back as a loop.
HINTS = frozenset({"vacation-subject"})


def header_signals(headers: Sequence[tuple[str, str]], *, envelope_sender: str | None) -> tuple[str, ...]:
    """`signals` over a header list as an adapter receives it (the milter's header callbacks): the
    first field of each name counts, as it does for the classifier's parsed message."""
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.lower(), value)
    ctype, params = mime.content_type(first.get("content-type", ""))
    report_type = params.get("report-type", "").lower() if ctype == "multipart/report" else None
    return signals(first.get, content_type=ctype, report_type=report_type, envelope_sender=envelope_sender)


def is_loop(found: Iterable[str]) -> bool:
    """Whether a message to a protected address is automatic mail that must never be answered: any
    signal but a hint (Launchpad's incoming-mail rules; RFC 3834 section 2)."""
    return any(signal not in HINTS for signal in found)
