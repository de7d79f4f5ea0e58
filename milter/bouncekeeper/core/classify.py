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
once (core.message, with our own MIME reader) and every stage reads the same tree; only flufl.bounce's
detectors, which need an email.message.Message, get a stdlib parse of their own, for the few messages
that reach them.

The rooms: this module holds the order and the entry points; core.message the message as read;
core.dsn_stage the delivery-status parts; core.failure one recipient's failure from what reports on
it; core.limits the work caps; core.rules the phrase tables, one module per dialect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from bouncekeeper.core import dsn, loops, message, mime, rules
from bouncekeeper.core.addresses import decode, normalise
from bouncekeeper.core.dsn_stage import read as read_dsn
from bouncekeeper.core.failure import Evidence, build, delayed
from bouncekeeper.core.limits import MAX_EXPLAIN_CHARS, MAX_FLUFL_BYTES, MAX_RECIPIENTS, note
from bouncekeeper.core.message import Message, is_own_address
from bouncekeeper.core.model import BounceKind, Classification, Delay, Failure, MessageType, Stage
from bouncekeeper.core.rules import amazonses, bodies, fml

if TYPE_CHECKING:
    import email.message

# flufl.bounce logs a traceback for each detector exception before re-raising it; we contain those and
# record them in Classification.errors, so its own log line would only duplicate them.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False

_T = TypeVar("_T")


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
    message to many recipients costs one classification, not one per recipient (docs/hostile.md: 2,000 RCPTs
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
                self._looks_bounce = triage.msg is not None and triage.msg.looks_like_bounce()
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


def judge_smtp_reply(address: str, code: int, status_field: str | None, text: str) -> Failure:
    """One recipient's failure from the reply an SMTP server gave at submission time (Launchpad's
    SMTP-time bounces: `bouncekeeper record`, `POST /smtp-failures`), judged exactly as the same reply
    inside a bounce's Diagnostic-Code is: the same status tables, phrase rules and kind rule
    (core.failure.build), so a refusal means one thing whichever way it reaches us.

    Raises ValueError for a code that is no failure or a malformed status.
    """
    if not 400 <= code <= 599:
        raise ValueError(f"not a failure reply code: {code}")
    clean = status_field.strip() if status_field else None
    if clean and dsn.STATUS_RE.fullmatch(clean) is None:  # the DSN reader's own pattern
        raise ValueError(f"not an RFC 3463 status: {status_field!r}")
    reply = " ".join(str(part) for part in (code, clean, text) if part)
    return build(
        Evidence(
            address, reply, dsn.status_of(clean), Stage.RULES, diagnostic=reply, action=None, retried=False
        )
    )


class _Triage:
    """One message through the stages, in order; each stage's failure is contained and recorded."""

    def __init__(self, raw: bytes, verp_recipient: str | None, envelope_sender: str | None) -> None:
        self.raw = raw
        self.verp = normalise(verp_recipient) if verp_recipient else None
        self.envelope_sender = envelope_sender
        self.errors: list[str] = []
        self.msg: Message | None = None  # the message as read, once it is
        self.dsn_groups: int | None = None  # per-recipient groups the delivery-status parts held, once read
        self.limits: list[str] = []  # the caps reached, in the order met (Classification.limits)

    # -- the order ---------------------------------------------------------------------------------

    def run(self) -> Classification:
        data = message.prepare(self.raw, self.limits)
        if not data:
            return self._finish(MessageType.UNRECOGNISED, [], [])
        msg = self.msg = message.read(data, self.limits, self.envelope_sender)
        if msg.feedback or msg.report_type == "feedback-report":
            return self._finish(MessageType.FEEDBACK, [], [])
        return self._standard(msg) or self._non_standard(msg)

    def _standard(self, msg: Message) -> Classification | None:
        """The formats that say what they are: RFC 3464 delivery-status parts, an Amazon SES notice."""
        found = self._attempt("dsn", lambda: read_dsn(msg, self.limits)) if msg.dsn_parts else None
        if found is not None:
            self.dsn_groups = found.groups
            if found.failures or found.delays:
                return self._verdict(found.failures, found.delays)
            if found.successes:
                return self._finish(MessageType.DELIVERED, [], [])
        notice = self._attempt(
            "amazonses", lambda: amazonses.read(msg.human_text()) if msg.text_parts else None
        )
        if notice is not None:
            return self._from_notice(notice)
        return None

    def _non_standard(self, msg: Message) -> Classification:
        """Our own rules for non-standard reports, then flufl.bounce's detectors, then auto-replies, then
        a report that names no recipient."""
        failures: list[Failure] = []
        delays: list[Delay] = []
        autoreply = _looks_autoreply(msg)
        if not autoreply:
            failures, delays = self._attempt("rules", lambda: self._rules_stage(msg)) or ([], [])
            if not failures and not delays and _worth_flufl(msg):
                # flufl.bounce raises IndexError etc. on real mail: contained like any stage's failure.
                failures, delays = self._attempt("flufl", lambda: self._flufl_stage(msg)) or ([], [])
        if failures or delays:
            return self._verdict(failures, delays)
        if autoreply:
            return self._finish(MessageType.AUTOREPLY, [], [])
        if msg.dsn_parts and self.verp is None:
            failures = self._attempt("returned", lambda: self._returned_recipient(msg)) or []
            if failures:
                return self._finish(MessageType.BOUNCE, failures, [])
        return self._finish(MessageType.UNRECOGNISED, [], [])

    def _attempt(self, name: str, stage: Callable[[], _T]) -> _T | None:
        """A stage's result, or None when it failed on this input (recorded in `errors`)."""
        try:
            return stage()
        except Exception as exc:  # noqa: BLE001 - a stage failure is contained: classify never raises
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return None

    # -- stages ------------------------------------------------------------------------------------

    def _from_notice(self, notice: amazonses.Notice) -> Classification:
        if notice.kind == "complaint":
            return self._finish(MessageType.FEEDBACK, [], [])
        if notice.kind == "delivery":
            return self._finish(MessageType.DELIVERED, [], [])
        failures = []
        for raw_address, status_field, diagnostic, _action in notice.recipients:
            address = normalise(raw_address)
            if address is not None:
                failures.append(
                    build(
                        Evidence(
                            address,
                            diagnostic,
                            dsn.status_of(status_field),
                            Stage.RULES,
                            diagnostic=diagnostic,
                        )
                    )
                )
        if failures:
            return self._finish(MessageType.BOUNCE, failures, [])
        return self._finish(MessageType.UNRECOGNISED, [], [])

    def _flufl_stage(self, msg: Message) -> tuple[list[Failure], list[Delay]]:
        # flufl.bounce reads an email.message.Message: the stdlib parse happens only here, for the few
        # messages that reach this stage.
        data = msg.data
        if len(data) > MAX_FLUFL_BYTES:
            data = data[:MAX_FLUFL_BYTES]
            note(self.limits, "bytes")
        temporary, permanent = all_failures(_stdlib_parse(data))
        failures: list[Failure] = []
        delays: list[Delay] = []
        if not temporary and not permanent:
            return failures, delays
        human = msg.human_text()
        delay_notice = bodies.is_delay_notice(human) and not permanent
        own = msg.own_addresses(("from", "sender", "reply-to", "return-path"))
        full = msg.full_text()

        def unlikely(address: str) -> bool:
            return is_own_address(address) or address in own or bodies.only_as_sender(full, address)

        def flufl_failure(address: str, raw_address: bytes) -> Failure:
            context = bodies.context_for(human, address, decode(raw_address))
            return _text_failure(msg, address, context, Stage.FLUFL)

        named: set[str] = set()
        for raw_address in [*sorted(permanent), *sorted(temporary)]:
            address = normalise(raw_address)
            if address is None or address in named or unlikely(address):
                continue
            if len(named) >= MAX_RECIPIENTS:
                note(self.limits, "recipients")
                break
            named.add(address)
            if raw_address in permanent:
                failures.append(flufl_failure(address, raw_address))
                continue
            failure = flufl_failure(address, raw_address)
            # flufl.bounce reports delay warnings (its SimpleWarning detector) as temporary failures.
            if delay_notice:
                delays.append(delayed(failure))
            else:
                failures.append(failure)
        return failures, delays

    def _returned_recipient(self, msg: Message) -> list[Failure]:
        """A delivery-status report that lists no recipient (Postfix writes "Delivery report unavailable"
        when its per-recipient log is lost): the failed recipient is the returned message's, when its
        To/Cc name exactly one address. What failed is not said, so the kind is UNKNOWN (never scored);
        a report that lists recipients, or reads as a delay, is not guessed at."""
        if self.dsn_groups != 0:
            return []  # it listed recipients (or could not be read): nothing to guess
        human = msg.human_text()
        if bodies.is_delay_notice(human):
            return []
        # Read only here, for the few reports that reach this point, with the one header parser.
        returned = msg.returned + [mime.parse(h.encode()) for h in msg.original_headers]
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
        failure = _text_failure(msg, address, "", Stage.RETURNED)
        return [replace(failure, kind=BounceKind.UNKNOWN)]

    def _rules_stage(self, msg: Message) -> tuple[list[Failure], list[Delay]]:
        if not msg.looks_like_bounce():
            return _fml_stage(msg), []
        human = msg.human_text()
        found = bodies.find_recipients(human, exclude=msg.own_addresses(), cut=self.limits)
        if not found:
            found = self._failed_recipients_header(msg)
        if not found:
            found = bodies.named_recipients(human, exclude=msg.own_addresses())
        failures = [_text_failure(msg, address, context, Stage.RULES) for address, context in found]
        if failures and bodies.is_delay_notice(human):
            return [], [delayed(f) for f in failures]
        return failures, []

    def _failed_recipients_header(self, msg: Message) -> list[tuple[str, str]]:
        """Exim and Google name the failed recipients in X-Failed-Recipients, whatever language the report
        is written in."""
        found: list[tuple[str, str]] = []
        named: set[str] = set()
        for piece in (msg.header("x-failed-recipients") or "").split(","):
            address = normalise(piece)
            if address is None or address in named:
                continue
            if len(named) >= MAX_RECIPIENTS:
                note(self.limits, "recipients")
                break
            named.add(address)
            found.append((address, bodies.context_for(msg.human_text(), address)))
        return found

    # -- the end -----------------------------------------------------------------------------------

    def _verdict(self, failures: list[Failure], delays: list[Delay]) -> Classification:
        """A bounce when any recipient failed, else a delay warning."""
        return self._finish(MessageType.BOUNCE if failures else MessageType.DELAY, failures, delays)

    def _finish(
        self, message_type: MessageType, failures: list[Failure], delays: list[Delay]
    ) -> Classification:
        msg = self.msg
        original = None
        try:
            original = msg.original_message_id() if msg is not None else None
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"message-id: {type(exc).__name__}: {exc}")
        if self.verp is not None:
            message_type, failures, delays = _attribute_to_verp(
                self.verp,
                message_type,
                failures,
                delays,
                looks_bounce=msg is not None and msg.looks_like_bounce(),
            )
        return Classification(
            message_type,
            failures=tuple(failures),
            delays=tuple(delays),
            loop_signals=msg.signals if msg is not None else (),
            original_message_id=original,
            verp_recipient=self.verp,
            errors=tuple(self.errors),
            limits=tuple(self.limits),
        )


def _text_failure(msg: Message, address: str, context: str, stage: Stage) -> Failure:
    """A failure found in the human-readable report: read from the lines about the address, else the
    whole report."""
    human = msg.human_text()
    return build(
        Evidence(
            address, context or human, None, stage, diagnostic=context, fallback=human, report=msg.human_text
        )
    )


def _fml_stage(msg: Message) -> list[Failure]:
    """An fml notice to a poster (no bounce by its looks): the list addresses it names."""
    if not fml.is_notice(msg.header("x-mlserver"), msg.header("from") or "", msg.header("message-id")):
        return []
    human = msg.human_text()
    found = [(address, bodies.context_for(human, address)) for address in fml.recipients(human)]
    return [_text_failure(msg, address, context, Stage.RULES) for address, context in found]


def _worth_flufl(msg: Message) -> bool:
    """Whether flufl.bounce's detectors may find something our rules did not: the message looks like
    a bounce, or its text says something only a failure report says. Ordinary mail skips them (they
    cost more than the rest of the classifier together, and their heuristics are where false
    positives come from).

    A message whose text parts hold no address at all is skipped too: the detectors report
    addresses written in the text, so they can find nothing there, and scanning a long returned
    message (a message/rfc822 part) for nothing is what they are slowest at
    (benchmarks/classify_speed.py)."""
    if not any("@" in msg.text(part) for part in msg.text_parts + msg.html_parts):
        return False
    if msg.looks_like_bounce():
        return True
    return rules.explain(msg.human_text()[:MAX_EXPLAIN_CHARS], None, None)[1] >= 2


def _looks_autoreply(msg: Message) -> bool:
    """RFC 3834 auto-replies and vacation notices that do not also read as bounces.

    Auto-Submitted alone decides nothing: Postfix, Exim and Mail.ru mark their bounces
    "auto-replied" too. A mailer-daemon sender or a bounce subject wins over it.
    """
    signals = msg.signals
    if any(s.startswith("auto-submitted:auto-replied") for s in signals) or any(
        s in loops.AUTOREPLY_HEADERS or s in ("vacation-subject", "x-post-messageclass") for s in signals
    ):
        return not msg.bounce_subject_or_sender()
    return False


def _attribute_to_verp(
    verp: str,
    message_type: MessageType,
    failures: list[Failure],
    delays: list[Delay],
    *,
    looks_bounce: bool,
) -> tuple[MessageType, list[Failure], list[Delay]]:
    """The VERP recipient is authoritative (Mailman): the failure is its, whatever the DSN lists."""
    if failures:
        match = [f for f in failures if f.recipient == verp]
        return message_type, match[:1] or [replace(failures[0], recipient=verp, stage=Stage.VERP)], []
    if delays:
        waiting = [d for d in delays if d.recipient == verp]
        return message_type, [], waiting[:1] or [replace(delays[0], recipient=verp, stage=Stage.VERP)]
    if message_type in (MessageType.FEEDBACK, MessageType.DELIVERED):
        return message_type, [], []
    if looks_bounce and message_type is MessageType.UNRECOGNISED:
        # A bounce to a signed VERP address whose format nobody recognised: it still says this recipient
        # failed, but not how, so it is recorded as UNKNOWN and never disables the address alone.
        return MessageType.BOUNCE, [Failure(verp, BounceKind.UNKNOWN, stage=Stage.VERP)], []
    # A VERP'd message that is no DSN is an auto-reply (Mailman 3's BounceRunner): never scored.
    return MessageType.AUTOREPLY, [], []
