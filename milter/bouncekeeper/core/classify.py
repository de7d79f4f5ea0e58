"""The bounce classifier: raw message bytes -> Classification. Never raises.

Triage order (Mailman 3's BounceRunner), with one change: VERP recipient given by the caller -> RFC 3464 /
RFC 6533 delivery-status parts (and Amazon SES JSON notices) -> our own rules for non-standard formats ->
flufl.bounce's detectors, for what our rules do not recognise -> auto-reply / feedback / success /
delay detection -> unrecognised.

The change: the first design put flufl.bounce before our rules. Measured on the shared corpus, our rules first
find more failed recipients at the same precision (recall 0.969 against 0.961), give a reason and a
status for each (flufl.bounce gives neither), and spare most messages flufl.bounce's seventeen detectors,
which cost more than the whole rest of the classifier (benchmarks/classify_speed.py). flufl.bounce still
answers for every message our rules leave unrecognised that looks like a bounce (daemon sender, bounce
subject, null sender, or a failure phrase in its text); ordinary mail never reaches its heuristics.

A stage that fails on some input is recorded in `errors` and the next stage runs. The message is parsed
once (compat32, the fastest stdlib policy and the one flufl.bounce expects) and every stage reads the
same tree.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bouncekeeper.core import dsn, loops, mime, rules
from bouncekeeper.core.addresses import decode, normalise
from bouncekeeper.core.model import (
    ADDRESS_REASONS,
    BounceKind,
    Classification,
    Failure,
    MessageType,
    Reason,
    Stage,
)
from bouncekeeper.core.rules import amazonses, bodies, fml, prefilter, status

if TYPE_CHECKING:
    import email.message

# Bounces put their report first; what follows is the returned original, which can be huge. Parsing is
# bounded so that a 30 MB message costs what a 4 MB one does; a cut MIME tree parses leniently.
MAX_PARSE_BYTES = 4 * 1024 * 1024
# flufl.bounce's detectors run a dozen patterns over every body line: on 4 MiB they take 1.5 s. They read
# the first 256 KiB (four times the corpus's largest message).
MAX_FLUFL_BYTES = 256 * 1024
MAX_TEXT_CHARS = 64 * 1024
# The human-readable report comes first; what follows the first 16 KiB is the returned original.
MAX_REPORT_CHARS = 16 * 1024
# Reasons are read from the start of a diagnostic or report: past 2,000 characters it is boilerplate.
MAX_EXPLAIN_CHARS = 2000
# Failed or delayed recipients read from one message: RFC 5321 section 4.5.3.1.8 asks servers to accept
# 100 recipients per message, and a report lists at most those one message had. Past this many, the
# rest are not read (Classification.limits says "recipients"): the work per message stays bounded
# whatever a stranger sends (issue 13: a DSN naming 20,000 recipients took 2.5 s).
MAX_RECIPIENTS = 1000
# What Classification.limits can name, and the cap each stands for:
#   "bytes"       the message was longer than MAX_PARSE_BYTES, or than MAX_FLUFL_BYTES when flufl.bounce's
#                 detectors ran; the rest was not read
#   "mime"        more than mime.MAX_DEPTH levels or mime.MAX_PARTS parts; deeper or later ones not read
#   "headers"     a header block over mime.MAX_HEADER_BYTES or mime.MAX_HEADERS fields; the rest not read
#   "dsn"         a delivery-status part over dsn.MAX_CHARS characters; the rest not read
#   "recipients"  more than MAX_RECIPIENTS recipients named; the first ones kept
#   "addresses"   more than bodies.MAX_ADDRESSES addresses in a plain-text report; the rest not examined

# flufl.bounce logs a traceback for each detector exception before re-raising it; we contain those and
# record them in Classification.errors, so its own log line would only duplicate them.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False

_FAILED_ACTIONS = ("fail", "undeliver", "bounce", "reject", "error", "deleted", "permanent")
_SUCCESS_ACTIONS = ("delivered", "relayed", "expanded")
# Human texts of delay warnings (Postfix "delay" notices, Sendmail "Warning: could not send message for
# past 4 hours", Exim "has not yet been delivered ... will continue trying", Exchange "Delivery Status
# Notification (Delay)").
_DELAY_TEXT = re.compile(
    r"will (?:keep|continue) (?:trying|to try|retrying)|will be retried|still trying|"
    r"(?:message|delivery) (?:has been |is )?delayed|delivery delay|not yet been delivered|"
    r"could not send message for past|warning: could not send|no action is required on your part|"
    r"this is a warning message only|will retry|still being retried|retry (?:until|for)|"
    r"delivery attempts will continue|will be tried again|not yet delivered",
)
# Texts that make a report final even when it also talks about retrying ("I'm not going to try again").
_FINAL_TEXT = re.compile(
    r"permanent(?:ly)? (?:error|failure|fatal)|failed permanently|(?:have|i've) given up|giving up|"
    r"not going to try again|will not (?:be retried|try again)|could not be delivered|undeliverable|"
    r"delivery (?:has )?failed|returned to sender|retry timeout exceeded|too long in (?:the )?queue",
)


def _stdlib_parse(data: bytes) -> email.message.Message:
    """The stdlib's parse (compat32, the policy flufl.bounce expects). The email package is imported
    here, for the few messages that reach flufl.bounce: importing it costs a short command's start-up
    more than our own MIME reader does."""
    import email.parser  # noqa: PLC0415
    import email.policy  # noqa: PLC0415

    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)


def all_failures(msg: email.message.Message) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """flufl.bounce's detectors: (temporary, permanent) addresses. Imported at the first call: its
    seventeen detectors' patterns are a tenth of `bouncekeeper classify`'s start-up, and most messages
    never reach them."""
    from flufl.bounce import all_failures as detect  # noqa: PLC0415

    return detect(msg)


_DELAY_SCREEN = prefilter.Screened(_DELAY_TEXT)


def _is_delay_notice(text: str) -> bool:
    lower = bodies.ascii_lower(text)  # the two patterns are lower-case
    return bool(_DELAY_SCREEN.search(lower)) and not _FINAL_TEXT.search(lower)


@dataclass
class _Parsed:
    """What one walk over the MIME tree found; the stages only read this."""

    message: mime.Part
    dsn_parts: list[mime.Part] = field(default_factory=list)
    feedback: bool = False
    text_parts: list[mime.Part] = field(default_factory=list)
    html_parts: list[mime.Part] = field(default_factory=list)
    original_headers: list[str] = field(default_factory=list)
    original_ids: list[str] = field(default_factory=list)
    returned: list[mime.Part] = field(default_factory=list)  # the returned messages (message/rfc822)
    texts: dict[int, str] = field(default_factory=dict)

    def text(self, part: mime.Part) -> str:
        """A part's decoded text, decoded once however many stages read it."""
        key = id(part)
        if key not in self.texts:
            self.texts[key] = part.text()
        return self.texts[key]


def classify(
    raw: bytes, *, verp_recipient: str | None = None, envelope_sender: str | None = None
) -> Classification:
    """Classify one message. Never raises: a failure of the whole pipeline is UNRECOGNISED with errors."""
    try:
        return _Triage(raw, verp_recipient, envelope_sender).run()
    except Exception as exc:  # noqa: BLE001 - the classifier's contract is to never raise
        verp = normalise(verp_recipient) if verp_recipient else None
        return Classification(
            MessageType.UNRECOGNISED,
            verp_recipient=verp,
            errors=(f"classify: {type(exc).__name__}: {exc}",),
        )


class Triaged:
    """One message triaged once; `for_verp(v)` is `classify(raw, verp_recipient=v, ...)` for any v.

    The VERP recipient changes only the end: which failure is attributed to it (`_attribute_to_verp`),
    and that a report naming no recipient is not guessed at (Stage.RETURNED) when VERP names one. So a
    message to many recipients costs one classification, not one per recipient (issue 14: 2,000 RCPTs
    made 2,000 classifications). The triage runs at the first `for_verp`; nothing here raises."""

    def __init__(self, raw: bytes, *, envelope_sender: str | None = None) -> None:
        self.raw = raw
        self.envelope_sender = envelope_sender
        self._base: Classification | None = None
        self._looks_bounce = False
        self._error: tuple[str, ...] = ()

    def _run(self) -> Classification | None:
        if self._base is None and not self._error:
            triage = _Triage(self.raw, None, self.envelope_sender)
            try:
                self._base = triage.run()
                self._looks_bounce = triage._looks_like_bounce() if hasattr(triage, "parsed") else False
            except Exception as exc:  # noqa: BLE001 - the classifier's contract is to never raise
                self._error = (f"classify: {type(exc).__name__}: {exc}",)
        return self._base

    def for_verp(self, verp_recipient: str | None = None) -> Classification:
        base = self._run()
        verp = normalise(verp_recipient) if verp_recipient else None
        if base is None:
            return Classification(MessageType.UNRECOGNISED, verp_recipient=verp, errors=self._error)
        if verp is None:
            return base
        # What the triage gives before any attribution when a VERP recipient is known: no guess.
        guessed = any(f.stage is Stage.RETURNED for f in base.failures)
        kind, failures, delays = _attribute_to_verp(
            verp,
            MessageType.UNRECOGNISED if guessed else base.message_type,
            [] if guessed else list(base.failures),
            list(base.delays),
            looks_bounce=self._looks_bounce,
        )
        return replace(
            base, message_type=kind, failures=tuple(failures), delays=tuple(delays), verp_recipient=verp
        )


def classify_each(
    raw: bytes, verp_recipients: Iterable[str | None], *, envelope_sender: str | None = None
) -> dict[str | None, Classification]:
    """`classify` for each VERP recipient (duplicates once), from one triage."""
    triaged = Triaged(raw, envelope_sender=envelope_sender)
    return {v: triaged.for_verp(v) for v in dict.fromkeys(verp_recipients)}


class _Triage:
    def __init__(self, raw: bytes, verp_recipient: str | None, envelope_sender: str | None) -> None:
        self.raw = raw
        self.verp = normalise(verp_recipient) if verp_recipient else None
        self.envelope_sender = envelope_sender
        self.errors: list[str] = []
        self._human: str | None = None
        self.dsn_groups: int | None = None  # per-recipient groups the delivery-status parts held, once read
        self.limits: list[str] = []  # the caps reached, in the order met (Classification.limits)

    def _cut(self, limit: str) -> None:
        if limit not in self.limits:
            self.limits.append(limit)

    # -- entry -------------------------------------------------------------------------------------

    def run(self) -> Classification:
        data = self.raw
        if len(data) > MAX_PARSE_BYTES:
            data = data[:MAX_PARSE_BYTES]
            self._cut("bytes")
        # Blank lines before the header (a paste or mbox artefact seen in real samples) would make the
        # whole message a body with no headers.
        data = data.lstrip(b" \t\r\n")
        if b"\r" in data and b"\n" not in data:
            # Old Mac line ends (CR only): the stdlib parser copes, but flufl.bounce's line-based
            # detectors and our own do not. LF is what every stage expects.
            data = data.replace(b"\r", b"\n")
        if not data:
            return self._finish(MessageType.UNRECOGNISED, [], [], ())
        self.data = data
        msg = mime.parse(data, self.limits)
        self.parsed = _walk(msg)
        ctype = msg.content_type
        report_type = msg.params.get("report-type", "").lower() if ctype == "multipart/report" else None
        signals = loops.signals(
            self._header, content_type=ctype, report_type=report_type, envelope_sender=self.envelope_sender
        )
        self.signals = signals

        if self.parsed.feedback or report_type == "feedback-report" or msg.get("x-hmxmroriginalrecipient"):
            return self._finish(MessageType.FEEDBACK, [], [], signals)

        failures: list[Failure] = []
        delays: list[Failure] = []
        successes = 0
        if self.parsed.dsn_parts:
            try:
                failures, delays, successes = self._dsn_stage()
            except Exception as exc:  # noqa: BLE001 - a stage failure is contained: classify never raises
                self.errors.append(f"dsn: {type(exc).__name__}: {exc}")
        if failures or delays:
            return self._finish(
                MessageType.BOUNCE if failures else MessageType.DELAY, failures, delays, signals
            )
        if successes:
            return self._finish(MessageType.DELIVERED, [], [], signals)
        notice = None
        try:
            notice = amazonses.read(self._human_text()) if self.parsed.text_parts else None
        except Exception as exc:  # noqa: BLE001 - a stage failure is contained: classify never raises
            self.errors.append(f"amazonses: {type(exc).__name__}: {exc}")
        if notice is not None:
            return self._from_notice(notice, signals)

        autoreply = self._looks_autoreply()
        if not autoreply:
            try:
                failures, delays = self._rules_stage()
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"rules: {type(exc).__name__}: {exc}")
            if not failures and not delays and self._worth_flufl():
                try:
                    failures, delays = self._flufl_stage()
                except Exception as exc:  # noqa: BLE001 - flufl.bounce raises IndexError etc. on real mail
                    self.errors.append(f"flufl: {type(exc).__name__}: {exc}")
        if failures or delays:
            return self._finish(
                MessageType.BOUNCE if failures else MessageType.DELAY, failures, delays, signals
            )
        if autoreply:
            return self._finish(MessageType.AUTOREPLY, [], [], signals)
        if self.parsed.dsn_parts and self.verp is None:
            try:
                failures = self._returned_recipient()
            except Exception as exc:  # noqa: BLE001 - a stage failure is contained: classify never raises
                self.errors.append(f"returned: {type(exc).__name__}: {exc}")
            if failures:
                return self._finish(MessageType.BOUNCE, failures, [], signals)
        return self._finish(MessageType.UNRECOGNISED, [], [], signals)

    # -- stages ------------------------------------------------------------------------------------

    def _dsn_stage(self) -> tuple[list[Failure], list[Failure], int]:
        failures: list[Failure] = []
        delays: list[Failure] = []
        successes = 0
        human: str | None = None
        seen: set[tuple[str, str]] = set()
        groups = 0
        for report in dsn.reports(self.parsed.text(part) for part in self.parsed.dsn_parts):
            groups += len(report.recipients)
            if report.cut:
                self._cut("dsn")
            for rcpt in report.recipients:
                if len(failures) + len(delays) + successes >= MAX_RECIPIENTS:
                    self._cut("recipients")
                    break
                address = _address(rcpt.final_recipient) or _address(rcpt.original_recipient)
                if address is None:
                    continue
                action = _action(rcpt.action, rcpt.status)
                if action in _SUCCESS_ACTIONS:
                    successes += 1
                    continue
                if action is None or (address, action) in seen:
                    continue  # MTAs repeat a recipient's block (one per MX tried): the first tells
                seen.add((address, action))
                diagnostic = rcpt.diagnostic
                whole_reply = ""
                if _CONTINUED.match(diagnostic):
                    if human is None:
                        human = self._human_text()
                    whole_reply = _whole_reply(diagnostic, human)
                if rcpt.status_comment and _has_words(rcpt.status_comment):
                    diagnostic = f"{diagnostic} {rcpt.status_comment}".strip()
                if not diagnostic or _is_bare_code(diagnostic):
                    if human is None:
                        human = self._human_text()
                    context = bodies.context_for(human, address, rcpt.final_recipient)
                    text = f"{diagnostic} {context}".strip()
                else:
                    text = diagnostic
                fallback = ""
                if not _has_words(text):
                    if human is None:
                        human = self._human_text()
                    fallback = human
                # No Action and no Status: a text that reads as a delay is one.
                if (
                    action == "failed"
                    and rcpt.action is None
                    and rcpt.status is None
                    and _DELAY_TEXT.search(bodies.ascii_lower(text))
                ):
                    action = "delayed"
                failure = _failure(
                    address,
                    text,
                    rcpt.status,
                    Stage.DSN,
                    diagnostic=whole_reply or diagnostic,
                    remote_mta=rcpt.remote_mta,
                    action=action,
                    fallback=fallback,
                    report=self._human_text,
                    whole_reply=whole_reply,
                    program_exit=rcpt.diagnostic_type == "x-unix" and rcpt.diagnostic.isdigit(),
                )
                (delays if action == "delayed" else failures).append(failure)
        self.dsn_groups = groups
        return failures, delays, successes

    def _from_notice(self, notice: amazonses.Notice, signals: tuple[str, ...]) -> Classification:
        if notice.kind == "complaint":
            return self._finish(MessageType.FEEDBACK, [], [], signals)
        if notice.kind == "delivery":
            return self._finish(MessageType.DELIVERED, [], [], signals)
        failures = []
        for raw_address, status_field, diagnostic, _action in notice.recipients:
            address = normalise(raw_address)
            if address is not None:
                failures.append(
                    _failure(
                        address, diagnostic, status.normal(status_field), Stage.RULES, diagnostic=diagnostic
                    )
                )
        if failures:
            return self._finish(MessageType.BOUNCE, failures, [], signals)
        return self._finish(MessageType.UNRECOGNISED, [], [], signals)

    def _flufl_stage(self) -> tuple[list[Failure], list[Failure]]:
        # flufl.bounce reads an email.message.Message: the stdlib parse happens only here, for the few
        # messages that reach this stage.
        data = self.data
        if len(data) > MAX_FLUFL_BYTES:
            data = data[:MAX_FLUFL_BYTES]
            self._cut("bytes")
        temporary, permanent = all_failures(_stdlib_parse(data))
        failures: list[Failure] = []
        delays: list[Failure] = []
        if not temporary and not permanent:
            return failures, delays
        human = self._human_text()
        delay_notice = _is_delay_notice(human) and not permanent
        own = self._own_addresses(("from", "sender", "reply-to", "return-path"))
        full = _full_text(self.parsed)

        def unlikely(address: str) -> bool:
            return self._is_own_address(address) or address in own or bodies.only_as_sender(full, address)

        def flufl_failure(address: str, raw_address: bytes) -> Failure:
            context = bodies.context_for(human, address, decode(raw_address))
            return self._text_failure(address, context, human, Stage.FLUFL)

        named: set[str] = set()
        for raw_address in [*sorted(permanent), *sorted(temporary)]:
            address = normalise(raw_address)
            if address is None or address in named or unlikely(address):
                continue
            if len(named) >= MAX_RECIPIENTS:
                self._cut("recipients")
                break
            named.add(address)
            if raw_address in permanent:
                failures.append(flufl_failure(address, raw_address))
                continue
            failure = flufl_failure(address, raw_address)
            # flufl.bounce reports delay warnings (its SimpleWarning detector) as temporary failures.
            if delay_notice:
                delays.append(replace(failure, action="delayed", reason=Reason.DELAYED))
            else:
                failures.append(failure)
        return failures, delays

    def _returned_recipient(self) -> list[Failure]:
        """A delivery-status report that lists no recipient (Postfix writes "Delivery report unavailable"
        when its per-recipient log is lost): the failed recipient is the returned message's, when its
        To/Cc name exactly one address. What failed is not said, so the kind is UNKNOWN (never scored);
        a report that lists recipients, or reads as a delay, is not guessed at."""
        if self.dsn_groups != 0:
            return []  # it listed recipients (or could not be read): nothing to guess
        human = self._human_text()
        if _is_delay_notice(human):
            return []
        # Read only here, for the few reports that reach this point, with the one header parser.
        returned = self.parsed.returned + [mime.parse(h.encode()) for h in self.parsed.original_headers]
        values = [value for part in returned for name, value in part.headers if name in ("to", "cc")]
        addresses = {
            address
            for value in values
            for piece in value.split(",")
            if (address := normalise(piece)) is not None
        }
        if len(addresses) != 1:
            return []
        (address,) = addresses
        failure = self._text_failure(address, "", human, Stage.RETURNED)
        return [replace(failure, kind=BounceKind.UNKNOWN)]

    def _text_failure(self, address: str, context: str, human: str, stage: Stage) -> Failure:
        """A failure found in the human-readable report: read from the lines about the address, else the
        whole report."""
        return _failure(
            address,
            context or human,
            None,
            stage,
            diagnostic=context,
            fallback=human,
            report=self._human_text,
        )

    def _rules_stage(self) -> tuple[list[Failure], list[Failure]]:
        if not self._looks_like_bounce():
            if not fml.is_notice(
                self._header("x-mlserver"), self._header("from") or "", self._header("message-id")
            ):
                return [], []
            human = self._human_text()
            found = [(address, bodies.context_for(human, address)) for address in fml.recipients(human)]
            return [
                self._text_failure(address, context, human, Stage.RULES) for address, context in found
            ], []
        human = self._human_text()
        found = bodies.find_recipients(human, exclude=self._own_addresses(), cut=self.limits)
        failed_header = self._header("x-failed-recipients")
        if not found and failed_header:
            # Exim and Google name the failed recipients in X-Failed-Recipients, whatever language
            # the report is written in.
            named: set[str] = set()
            for piece in failed_header.split(","):
                address = normalise(piece)
                if address is None or address in named:
                    continue
                if len(named) >= MAX_RECIPIENTS:
                    self._cut("recipients")
                    break
                named.add(address)
                found.append((address, bodies.context_for(human, address)))
        if not found:
            found = bodies.named_recipients(human, exclude=self._own_addresses())
        failures = [self._text_failure(address, context, human, Stage.RULES) for address, context in found]
        if failures and _is_delay_notice(human):
            return [], [replace(f, action="delayed", reason=Reason.DELAYED) for f in failures]
        return failures, []

    # -- helpers -----------------------------------------------------------------------------------

    def _header(self, name: str) -> str | None:
        """The first `name` header of the bounce itself, as text."""
        text = self.parsed.message.get(name)
        # Google writes a UTF-8 failed recipient as an RFC 2047 encoded word in X-Failed-Recipients
        # (not allowed in an address by RFC 2047 section 5, but it is what arrives); decode it so the
        # RFC 6531 address is read like any other.
        if text is not None and name in {"subject", "x-failed-recipients"} and "=?" in text:
            text = _decode_words(text)
        return text

    def _human_text(self) -> str:
        if self._human is None:
            self._human = _human_text(self.parsed)
        return self._human

    def _own_addresses(
        self, names: tuple[str, ...] = ("from", "to", "sender", "reply-to", "return-path")
    ) -> set[str]:
        """The bounce's own From/To: the reporting daemon and the original sender, rarely a failed
        recipient. (Delivered-To / X-Original-To are left out: they are the bounce address.)"""
        own: set[str] = set()
        for name in names:
            value = self._header(name)
            if value:
                for piece in value.split(","):
                    address = normalise(piece)
                    if address:
                        own.add(address)
        if self.envelope_sender:
            address = normalise(self.envelope_sender)
            if address:
                own.add(address)
        return own

    def _is_own_address(self, address: str) -> bool:
        local = address.partition("@")[0]
        return bool(loops.DAEMON_LOCAL.match(local))

    def _looks_like_bounce(self) -> bool:
        """A bounce subject or sender, a null envelope sender, a MAILER-DAEMON Return-Path (Sendmail's
        envelope sender for its own reports), or a multipart/report of report-type delivery-status
        (RFC 6522: the structure says it is a delivery report, whatever its language or its From)."""
        subject = self._header("subject") or ""
        sender = normalise(self._header("from") or "") or ""
        return_path = normalise(self._header("return-path") or "") or ""
        return bool(
            loops.BOUNCE_SUBJECT.search(subject)
            or loops.BOUNCE_SENDER_LOCAL.match(sender.partition("@")[0])
            or "null-sender" in self.signals
            or "multipart-report:delivery-status" in self.signals
            or loops.BOUNCE_SENDER_LOCAL.match(return_path.partition("@")[0])
        )

    def _worth_flufl(self) -> bool:
        """Whether flufl.bounce's detectors may find something our rules did not: the message looks like
        a bounce, or its text says something only a failure report says. Ordinary mail skips them (they
        cost more than the rest of the classifier together, and their heuristics are where false
        positives come from).

        A message whose text parts hold no address at all is skipped too: the detectors report
        addresses written in the text, so they can find nothing there, and scanning a long returned
        message (a message/rfc822 part) for nothing is what they are slowest at
        (benchmarks/classify_speed.py)."""
        if not any("@" in self.parsed.text(part) for part in self.parsed.text_parts + self.parsed.html_parts):
            return False
        if self._looks_like_bounce():
            return True
        return rules.explain(self._human_text()[:MAX_EXPLAIN_CHARS], None, None)[1] >= 2

    def _looks_autoreply(self) -> bool:
        """RFC 3834 auto-replies and vacation notices that do not also read as bounces.

        Auto-Submitted alone decides nothing: Postfix, Exim and Mail.ru mark their bounces
        "auto-replied" too. A mailer-daemon sender or a bounce subject wins over it.
        """
        if any(s.startswith("auto-submitted:auto-replied") for s in self.signals) or any(
            s in loops.AUTOREPLY_HEADERS or s in ("vacation-subject", "x-post-messageclass")
            for s in self.signals
        ):
            subject = self._header("subject") or ""
            sender = normalise(self._header("from") or "") or ""
            return not (
                loops.BOUNCE_SUBJECT.search(subject)
                or loops.BOUNCE_SENDER_LOCAL.match(sender.partition("@")[0])
            )
        return False

    def _finish(
        self,
        message_type: MessageType,
        failures: list[Failure],
        delays: list[Failure],
        signals: tuple[str, ...],
    ) -> Classification:
        original = None
        try:
            original = _original_message_id(self.parsed) if hasattr(self, "parsed") else None
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"message-id: {type(exc).__name__}: {exc}")
        if self.verp is not None:
            message_type, failures, delays = _attribute_to_verp(
                self.verp,
                message_type,
                failures,
                delays,
                looks_bounce=self._looks_like_bounce() if hasattr(self, "parsed") else False,
            )
        return Classification(
            message_type,
            failures=tuple(failures),
            delays=tuple(delays),
            loop_signals=signals,
            original_message_id=original,
            verp_recipient=self.verp,
            errors=tuple(self.errors),
            limits=tuple(self.limits),
        )


def _decode_words(text: str) -> str:
    """RFC 2047 encoded-words to text; undecodable pieces are kept as they came."""
    import email.errors  # noqa: PLC0415 - only for the few headers with encoded words: see _stdlib_parse
    import email.header  # noqa: PLC0415

    pieces = []
    try:
        chunks = email.header.decode_header(text)
    except (email.errors.HeaderParseError, ValueError):  # a broken base64 encoded-word
        return text
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            try:
                pieces.append(chunk.decode(charset or "ascii", errors="replace"))
            except LookupError:
                pieces.append(chunk.decode("latin-1"))
        else:
            pieces.append(chunk)
    return "".join(pieces)


def _attribute_to_verp(
    verp: str,
    message_type: MessageType,
    failures: list[Failure],
    delays: list[Failure],
    *,
    looks_bounce: bool,
) -> tuple[MessageType, list[Failure], list[Failure]]:
    """The VERP recipient is authoritative (Mailman): the failure is its, whatever the DSN lists."""
    if failures:
        match = [f for f in failures if f.recipient == verp]
        return message_type, match[:1] or [replace(failures[0], recipient=verp, stage=Stage.VERP)], []
    if delays:
        match = [f for f in delays if f.recipient == verp]
        return message_type, [], match[:1] or [replace(delays[0], recipient=verp, stage=Stage.VERP)]
    if message_type in (MessageType.FEEDBACK, MessageType.DELIVERED):
        return message_type, [], []
    if looks_bounce and message_type is MessageType.UNRECOGNISED:
        # A bounce to a signed VERP address whose format nobody recognised: it still says this recipient
        # failed, but not how, so it is recorded as UNKNOWN and never disables the address alone.
        return MessageType.BOUNCE, [Failure(verp, BounceKind.UNKNOWN, stage=Stage.VERP)], []
    # A VERP'd message that is no DSN is an auto-reply (Mailman 3's BounceRunner): never scored.
    return MessageType.AUTOREPLY, [], []


def _failure(
    address: str,
    text: str,
    status_field: str | None,
    stage: Stage,
    *,
    diagnostic: str = "",
    remote_mta: str | None = None,
    action: str | None = "failed",
    fallback: str = "",
    report: Callable[[], str] | None = None,
    whole_reply: str = "",
    program_exit: bool = False,
    retried: bool = True,
) -> Failure:
    """One recipient's failure from the text that reports on it (`text`), the report's Status field,
    the whole report when `text` says too little (`fallback`) and, read only when the SMTP command
    matters and `text` does not name it, the whole human-readable report (`report`). `retried` is
    False for a reply seen once at submission (judge_smtp_reply): no MTA retried it until it gave up."""
    status_code = _best_status(status_field, text)
    text = amazonses.remote_reply(text)
    reply_code = status.reply_code_in(text)
    reason, strength = rules.explain(text[:MAX_EXPLAIN_CHARS], status_code, reply_code)
    if strength < 2 and whole_reply:
        # The first line of a multi-line reply said little (a generic code, a vague word): its other
        # lines may say more. Only then: later lines are often hedged advice ("the domain may not exist,
        # or be blacklisted"), which must not outrank a first line that named the reason.
        more_reason, more_strength = rules.explain(whole_reply[:MAX_EXPLAIN_CHARS], status_code, reply_code)
        if more_strength > strength:
            reason, strength, text = more_reason, more_strength, whole_reply
    if strength < 2 and fallback and fallback != text and not (strength == 1 and reply_code):
        # The lines next to the address said little; the whole report may say more (one reason for all).
        # Not when they hold the remote server's own reply and a phrase: the rest is boilerplate.
        fb_status = status_code or dsn.status_of(fallback)
        fb_reply = reply_code or status.reply_code_in(fallback)
        fb_reason, fb_strength = rules.explain(fallback[:MAX_EXPLAIN_CHARS], fb_status, fb_reply)
        if fb_strength > strength:
            reason, status_code, reply_code, text = fb_reason, fb_status, fb_reply, fallback
            strength = fb_strength
    if program_exit and strength < 2:
        # "Diagnostic-Code: X-Unix; 127": the exit status of a local delivery program (Sendmail's prog
        # mailer, RFC 3464 section 2.3.6), which a vague line of its output ("Permission denied") does
        # not explain better (sisimai err/make-test-35: mailererror).
        reason = Reason.MAILERERROR
    dsn_class = _class_of(status_code, reply_code)
    command = bodies.smtp_command(text)
    # The rest of the report is read for the command only when the decision needs it: finding and
    # scanning it for every recipient made the classifier ~8% slower (benchmarks/classify_speed.py).
    # `own` is the command named in the lines about this recipient (for Sendmail, its own session's
    # transcript: bodies.context_for); the whole report's first command is only a guess for the stage
    # policy, as a report with several recipients can hold several sessions, so it never turns a
    # recipient into our sender.
    own = command
    if command is None and report is not None and reason in ADDRESS_REASONS:
        whole = report()
        own = bodies.smtp_command(bodies.context_for(whole, address))
        command = own or bodies.smtp_command(whole)
    if reason in ADDRESS_REASONS and (own == "MAIL" or _about_the_sender(status_code, text)):
        # "550 5.1.0 <app@sender.test>: Sender address rejected: User unknown", "553 5.1.8 Domain of
        # sender address does not exist": the words of a dead address, about our sender. The recipient
        # was never looked at (RFC 5321: MAIL FROM comes before any RCPT).
        reason = Reason.REJECTED
    reason = _user_unknown_by_stage(reason, status_code, reply_code, command, text)
    if action == "delayed":
        kind = BounceKind.TEMPORARY
        reason = Reason.DELAYED if reason is Reason.UNDEFINED else reason
    else:
        if retried and dsn_class is BounceKind.TEMPORARY and reason in _GAVE_UP_ON:
            # A final failure with a 4.x.x status (RFC 3463 section 3.1: "persistent transient"): the MTA
            # gave up retrying when the queue lifetime ran out; the last try's vague error is not the why.
            reason = Reason.EXPIRED
        kind = _kind(reason, dsn_class)
    return Failure(
        recipient=address,
        kind=kind,
        reason=reason,
        dsn_class=dsn_class,
        status=status_code,
        reply_code=reply_code,
        diagnostic=" ".join(diagnostic.split())[:1000],
        remote_mta=remote_mta,
        stage=stage,
        action=action,
        smtp_command=command,
    )


_SMTP_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


def judge_smtp_reply(address: str, code: int, status_field: str | None, text: str) -> Failure:
    """One recipient's failure from the reply an SMTP server gave at submission time (Launchpad's
    SMTP-time bounces: `bouncekeeper record`, `POST /smtp-failures`), judged exactly as the same reply
    inside a bounce's Diagnostic-Code is: the same status tables, phrase rules and kind rule (_failure),
    so a refusal means one thing whichever way it reaches us.

    Raises ValueError for a code that is no failure or a malformed status.
    """
    if not 400 <= code <= 599:
        raise ValueError(f"not a failure reply code: {code}")
    clean = status_field.strip() if status_field else None
    if clean and _SMTP_STATUS.match(clean) is None:
        raise ValueError(f"not an RFC 3463 status: {status_field!r}")
    reply = " ".join(str(part) for part in (code, clean, text) if part)
    return _failure(
        address, reply, status.normal(clean), Stage.RULES, diagnostic=reply, action=None, retried=False
    )


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
      user <a@b>" relayed by a gateway, "No such user") is read by its words (issue 13: the stage rule
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


def _action(action: str | None, status_code: str | None) -> str | None:
    """Map real-world Action values onto RFC 3464's five; infer a missing one from Status."""
    if action:
        if action.startswith("delay"):
            return "delayed"
        for success in _SUCCESS_ACTIONS:
            if action.startswith(success[:5]):
                return success
        if action.startswith(_FAILED_ACTIONS):
            return "failed"
    if status_code:
        if status_code[0] == "2":
            return "delivered"
        return "failed"
    return "failed" if action is None else None


# The first line of a multi-line SMTP reply ("550-5.7.1 ..."; RFC 5321 section 4.2.1).
_CONTINUED = re.compile(r"[245]\d\d-")


def _whole_reply(first: str, report: str) -> str:
    """A multi-line reply whose Diagnostic-Code holds only its first line, completed from the transcript.

    Sendmail 8.17 writes only the first line in Diagnostic-Code and "(reason: ...)"; its transcript
    ("<<< 550-5.7.1 ...") has them all, and the reason is often on a later one (Gmail: "... due to the
    very low" / "reputation of the sending IP address"; seen with a real Sendmail,
    tests/fixtures/mta/sendmail-gmailreputation.eml). Postfix and Exim join the lines themselves.
    """
    code = first[:3]
    lines = report.split("\n")
    head = first.strip()
    for index, line in enumerate(lines):
        if head not in line:
            continue
        pieces = [head]
        for following in lines[index + 1 : index + 40]:
            rest = following.strip()
            rest = rest[3:].lstrip() if rest.startswith("<<<") else rest
            if not rest.startswith(code) or rest[3:4] not in ("-", " "):
                break
            pieces.append(rest)
            if rest[3] == " ":
                break  # the last line of the reply
        if len(pieces) > 1:  # Sendmail's "(reason: 550-...)" line comes first, alone: the transcript next
            return " ".join(pieces)
    return first


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


def _walk(msg: mime.Part) -> _Parsed:
    parsed = _Parsed(msg)
    _collect(msg, parsed, top=True)
    if not parsed.dsn_parts:
        # Some MTAs label the delivery-status part text/plain; a part that reads as one is one.
        for part in parsed.text_parts:
            text = parsed.text(part)
            # "inal-" / "INAL-": a cheap case-sensitive test before the case-blind line scans.
            if ("inal-" in text or "INAL-" in text) and _DSN_FIELDS.search(text) and _DSN_ACTION.search(text):
                parsed.dsn_parts.append(part)
    return parsed


_DSN_FIELDS = re.compile(r"^\s*Final-Recipient\s*:", re.IGNORECASE | re.MULTILINE)
_DSN_ACTION = re.compile(r"^\s*(?:Action|Status)\s*:", re.IGNORECASE | re.MULTILINE)


def _collect(part: mime.Part, parsed: _Parsed, *, top: bool = False) -> None:
    ctype = part.content_type
    if part.children:
        for child in part.children:
            _collect(child, parsed)
        return
    if part.maintype == "multipart":
        # A multipart whose boundary never occurs: read it as text rather than lose the report inside it.
        parsed.text_parts.append(part)
    elif ctype in dsn.DSN_TYPES:
        parsed.dsn_parts.append(part)
    elif ctype == "message/feedback-report":
        parsed.feedback = True
    elif ctype in dsn.MESSAGE_TYPES and part.enclosed is not None:
        inner = part.enclosed
        if not top and not parsed.dsn_parts and inner.content_type == "multipart/report":
            # A bounce forwarded as an attachment (some gateways wrap the DSN they received): read the
            # inner report when the outer message has none of its own.
            _collect(inner, parsed)
            return
        value = inner.get("message-id")
        if value is not None:
            parsed.original_ids.append(value)
        parsed.returned.append(inner)
        if inner.get("x-hmxmroriginalrecipient") is not None:
            # Microsoft's JMRP complaint (Outlook.com / Hotmail feedback loop, not ARF): the complained-
            # about message is attached with this header added.
            parsed.feedback = True
    elif ctype in dsn.HEADERS_TYPES:
        parsed.original_headers.append(parsed.text(part))
    elif ctype == "text/plain" and part.filename is None:
        parsed.text_parts.append(part)
    elif ctype == "text/html" and part.filename is None:
        parsed.html_parts.append(part)


def _human_text(parsed: _Parsed) -> str:
    """The human-readable report, cut before the returned original message."""
    pieces: list[str] = []
    for part in parsed.text_parts:
        if part in parsed.dsn_parts and len(parsed.text_parts) > 1:
            continue
        pieces.append(parsed.text(part))
        if sum(len(p) for p in pieces) > MAX_REPORT_CHARS:
            break
    if not pieces:
        for part in parsed.html_parts:
            pieces.append(bodies.strip_html(parsed.text(part)))
    text = "\n".join(pieces)[:MAX_REPORT_CHARS]
    return bodies.cut_original(bodies.unix_newlines(text))


def _full_text(parsed: _Parsed) -> str:
    """Every text part, uncut (the returned original included), for position checks."""
    pieces = [parsed.text(part) for part in parsed.text_parts[:8]]
    return bodies.unix_newlines("\n".join(pieces)[: MAX_TEXT_CHARS * 4])


def _original_message_id(parsed: _Parsed) -> str | None:
    for value in parsed.original_ids:
        found = dsn.message_id_in(f"Message-ID: {value}")
        if found:
            return found
    for text in parsed.original_headers:
        found = dsn.message_id_in(text)
        if found:
            return found
    # Plain-text bounces quote the original's headers in their body; the bounce's own Message-ID is a
    # header, never a body line, so the first Message-ID line of a text part is the original's.
    for part in parsed.text_parts:
        found = dsn.message_id_in(parsed.text(part))
        if found:
            return found
    return None
