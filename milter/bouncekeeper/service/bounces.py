"""One message through the core and the store: the API the milter, the LMTP listener and the CLI share.

The adapters translate protocol to calls and `Outcome`s / `StoreUnavailable` to answers; every decision is
made here or in the core. Nothing here answers SMTP: on `StoreUnavailable` the adapters tempfail (451
4.3.0) so that no bounce is lost, and mail that is not a bounce never reaches this module's store calls.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict

from bouncekeeper import config, verpkeys
from bouncekeeper.core import verp
from bouncekeeper.core.addresses import normalise
from bouncekeeper.core.classify import Triaged, judge_smtp_reply
from bouncekeeper.core.model import Classification, Failure, MessageType, Reason
from bouncekeeper.core.rcpt import Answer, RcptVerdict, received
from bouncekeeper.core.scoring import Effect, Mode, Rule, Rules, State, assess
from bouncekeeper.log import get_logger
from bouncekeeper.service import ids
from bouncekeeper.service.voucher import Voucher, vouch
from bouncekeeper.store import Store, StoreUnavailable, connect
from bouncekeeper.store.event import Event, EventKind, Source
from bouncekeeper.store.model import Item, Result

log = get_logger("bouncekeeper.service")  # as before the folders: log filters use it

Classifier = Callable[..., Classification]
# Recipients recorded per message (failures and delays together): a real DSN names the recipients of one
# transaction at one destination, rarely more than a few dozen; a stranger's can name thousands. The
# rest are cut, logged and counted (stats `cut:recipients`); docs/security.md.
MAX_RECIPIENTS = 100

# Message types that are never failures, as the event kind they are recorded with.
_NON_FAILURE_KINDS = {
    MessageType.AUTOREPLY: EventKind.AUTOREPLY,
    MessageType.FEEDBACK: EventKind.FEEDBACK,
    MessageType.DELIVERED: EventKind.DELIVERED,
    MessageType.DELAY: EventKind.DELAYED,
    MessageType.UNRECOGNISED: EventKind.UNRECOGNISED,
    MessageType.BOUNCE: EventKind.UNRECOGNISED,  # a bounce whose failures named nobody
}


def rules_from(policy: config.ScoringSettings, verp_settings: config.VerpSettings | None = None) -> Rules:
    """The policy's parameters in seconds, from the settings in days."""
    day = 86_400
    max_age_days = (verp_settings or config.VerpSettings()).max_age_days
    return Rules(
        mode=Mode(policy.mode),
        rule=Rule(policy.rule),
        soft_threshold=policy.soft_threshold,
        soft_window=policy.soft_window_days * day,
        hard_threshold=policy.hard_threshold,
        quiet=policy.quiet_days * day,
        count_threshold=policy.count_threshold,
        count_window=policy.count_window_days * day,
        non_scoring=frozenset(Reason(r) for r in policy.non_scoring_reasons),
        breaker_addresses=policy.breaker_addresses,
        breaker_window=policy.breaker_window_minutes * 60,
        breaker_freeze=policy.breaker_freeze_hours * 3600,
        # An address verifies until max_age_days after the day it was signed, and one day early (skew).
        replay_window=(max_age_days + 1 + verp.MAX_FUTURE_DAYS) * day,
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What one message did to one address."""

    address: str
    kind: EventKind
    effect: Effect
    state: State
    score: int
    threshold: int
    soft_count: int = 0
    status: str | None = None
    reason: str | None = None
    scored: bool = False
    duplicate: bool = False
    disabled: bool = False
    reached: bool = False
    why: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    classification: Classification
    recorded: tuple[Decision, ...] = ()
    verp: verp.VerpResult | None = None
    forged: bool = False
    event_id: str = ""
    client_addr: str | None = None
    # Addresses the bounce named without evidence for them (no authentic VERP address: require_verp), or
    # outside the token's recipients: recorded in the global stream only, never scored.
    unvouched: tuple[str, ...] = ()
    # Recipients the message named beyond MAX_RECIPIENTS, not recorded.
    cut: int = 0

    def summary(self) -> str:
        """The one INFO line for this message (one line per message, with its queue id):
        `bounce recorded rcpt=alice@example.org kind=permanent status=5.1.1 reason=userunknown score=3/5`."""
        c = self.classification
        if self.forged:
            rcpt = self.verp.recipient if self.verp and self.verp.recipient else "-"
            status = self.verp.status.value if self.verp else "forged"
            return f"forged bounce recorded verp={status} rcpt={rcpt} client={self.client_addr or '-'}"
        what = "bounce" if c.is_bounce else c.message_type.value
        tail = ""
        if self.unvouched:
            tail += f"; {len(self.unvouched)} address(es) unscored, no authentic VERP address for them"
        if self.cut:
            tail += f"; {self.cut} more recipient(s) cut (limit {MAX_RECIPIENTS})"
        if not self.recorded:
            return (
                f"{what} recorded without a scored address{tail}"
                if tail
                else f"{what} recorded without an address"
            )
        parts = []
        for d in self.recorded:
            text = (
                f"rcpt={d.address} kind={d.kind.value} status={d.status or '-'} reason={d.reason or '-'} "
                f"score={d.score}/{d.threshold}"
            )
            if d.duplicate:
                text += " duplicate"
            elif d.effect is not Effect.NONE and not d.scored:
                text += f" unscored ({d.why})"
            if d.state is not State.ACTIVE:
                text += f" state={d.state.value}"
            elif d.reached:
                text += " threshold-reached(observe)"
            parts.append(text)
        return f"{what} recorded " + "; ".join(parts) + tail


class Classified:
    """One message's classifications, one per VERP recipient, from one triage (core.classify.Triaged):
    an adapter makes one per message (`Service.triage`) and passes it to `process_bounce` for each of
    its recipients. An injected classifier (tests) is called once per distinct VERP recipient."""

    def __init__(self, raw: bytes, envelope_sender: str | None, classifier: Classifier | None) -> None:
        self.raw = raw
        self.envelope_sender = envelope_sender
        self._classifier = classifier
        self._triaged = Triaged(raw, envelope_sender=envelope_sender) if classifier is None else None
        self._memo: dict[str | None, Classification] = {}
        self._event_id: str | None = None

    def for_verp(self, verp_recipient: str | None) -> Classification:
        if verp_recipient not in self._memo:
            if self._triaged is not None:
                found = self._triaged.for_verp(verp_recipient)
            else:
                assert self._classifier is not None
                found = self._classifier(
                    self.raw, verp_recipient=verp_recipient, envelope_sender=self.envelope_sender
                )
            if not self._memo and found.limits:
                # Once per message: the verdict covers the part read, and an operator who sees the line
                # knows a stranger sent something large or strange (core.limits: the classifier's work caps).
                log.cut(
                    "classification",
                    "classification cut short at work caps: %s (%d bytes)",
                    ",".join(found.limits),
                    len(self.raw),
                )
            self._memo[verp_recipient] = found
        return self._memo[verp_recipient]

    @property
    def event_id(self) -> str:
        """The message's dedup id (`ids.identity`), read once for all its recipients."""
        if self._event_id is None:
            self._event_id = ids.identity(self.raw)
        return self._event_id

    @property
    def limits(self) -> tuple[str, ...]:
        """The work caps the message's classification reached (empty until it is classified)."""
        return next(iter(self._memo.values())).limits if self._memo else ()


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message as an adapter received it for one envelope recipient: what `process_bounce` and
    `record_loop` record. `classified`: the message's `Service.triage`, shared by its recipients (the
    message classified once); `verdict`: the adapter's verdict on `envelope_rcpt` at RCPT (core/rcpt.py:
    the VERP address decoded once, and "forged" decided there). Without them `process_bounce` makes them."""

    raw: bytes
    source: Source
    envelope_rcpt: str | None = None
    envelope_sender: str | None = None
    client_addr: str | None = None
    queue_id: str | None = None
    classified: Classified | None = None
    verdict: RcptVerdict | None = None


class Service:
    def __init__(
        self,
        settings: config.Settings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        classifier: Classifier | None = None,
        keyring: verp.Keyring | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules_from(settings.policy, settings.verp)
        self.clock = clock
        self._classifier = classifier
        if keyring is None and settings.verp.bounce_domain:
            # VERP is on: its keys must load (a ConfigError names the key otherwise).
            keyring = verpkeys.load_keyring(settings)
        self.keyring = keyring

    @classmethod
    def open(cls, settings: config.Settings, *, supervise: bool = False) -> Service:
        """A Service on the store the settings name (the embedded redis-server when url is empty)."""
        return cls(settings, connect(settings, supervise=supervise))

    def close(self) -> None:
        self.store.close()

    def reconfigured(self, settings: config.Settings) -> Service:
        """This service's store and classifier under new settings (SIGHUP): keys and rules read again."""
        return Service(settings, self.store, clock=self.clock, classifier=self._classifier)

    def triage(self, raw: bytes, *, envelope_sender: str | None) -> Classified:
        """One message's classification, done once whatever the number of recipients it is for."""
        return Classified(raw, envelope_sender, self._classifier)

    # --- the API the adapters call (milter, LMTP listener, policy service, IMAP scanner, HTTP API, CLI) ---

    def check_rcpt(self, address: str) -> verp.VerpResult:
        """Decode a VERP address with today's date. Pure: no Redis."""
        v = self.settings.verp
        if self.keyring is None or not v.bounce_domain:
            return verp.VerpResult(verp.VerpStatus.NOT_VERP)
        return verpkeys.decode_with(address, self.keyring, self.settings, day=verpkeys.today(self.clock()))

    def process_bounce(self, arrival: Arrival) -> Outcome:
        """Classify one message and record what it says, atomically per address. Raises StoreUnavailable
        (nothing, or only a harmless part, was written; a retry of the same message counts once)."""
        now = self.clock()
        classified = arrival.classified
        if classified is None:
            classified = self.triage(arrival.raw, envelope_sender=arrival.envelope_sender)
        verdict = arrival.verdict
        if verdict is None and arrival.envelope_rcpt:
            # No RCPT stage before this call: the verdict of a message that can no longer be refused. An
            # expired signature is authentic but old: an operator ingesting old bounces from files vouches
            # for it, the network does not (a replayed address).
            verdict = received(
                self.check_rcpt(arrival.envelope_rcpt), vouch_expired=arrival.source is Source.CLI
            )
        checked = verdict.verp if verdict is not None else None
        event_id = classified.event_id  # first, as it always was: the message's id, read once
        if verdict is not None and verdict.forged:
            unvouched = _Recording(arrival, now, event_id, classified.for_verp(None), Voucher())
            return self._record_forged(unvouched, verdict.verp)
        authentic = verdict is not None and verdict.answer is Answer.ACCEPT
        voucher = vouch(checked if authentic else None, self.store)
        recording = _Recording(arrival, now, event_id, classified.for_verp(voucher.recipient), voucher)
        items, loose, cut = self._sort(recording)
        self._log_unrecorded(recording, items, loose, cut)
        results = self.store.record(items, now=now, rules=self.rules, raw=arrival.raw) if items else []
        return Outcome(
            recording.classification,
            recorded=tuple(self._decision(i, r) for i, r in zip(items, results, strict=True)),
            verp=checked,
            event_id=recording.event_id,
            client_addr=arrival.client_addr,
            unvouched=tuple(f.recipient for f in loose),
            cut=cut,
        )

    def _record_forged(self, recording: _Recording, checked: verp.VerpResult) -> Outcome:
        """A bounce to a forged or expired VERP address: the stream only, never under the address it names."""
        status = checked.status.value if checked.status is not verp.VerpStatus.VALID else "forged"
        note = f"envelope recipient {recording.arrival.envelope_rcpt} ({status})"
        self.store.log_event(recording.stream_event(EventKind.FORGED, note, checked.recipient))
        return Outcome(
            recording.classification,
            verp=checked,
            forged=True,
            event_id=recording.event_id,
            client_addr=recording.arrival.client_addr,
        )

    def _log_unrecorded(
        self, recording: _Recording, items: list[Item], loose: list[Failure], cut: int
    ) -> None:
        """The message's one stream-only entry: the recipients it named without evidence for them and
        those cut (`unvouched`), or, when it recorded nothing under any address, what it was."""
        if loose or cut:
            note = _unvouched_note(len(loose), cut, token=bool(recording.voucher.token_recipients))
            named = " ".join(_named(f) for f in loose)
            unvouched = dataclasses.replace(
                recording.event(EventKind.UNVOUCHED, "", note=note), recipients=named
            )
            self.store.log_once(unvouched, counters={"cut:recipients": cut} if cut else None)
        elif not items:
            kind = _NON_FAILURE_KINDS[recording.classification.message_type]
            note = f"envelope recipient {recording.arrival.envelope_rcpt or '-'}"
            self.store.log_event(recording.stream_event(kind, note))

    def _sort(self, recording: _Recording) -> tuple[list[Item], list[Failure], int]:
        """The items to record per address, the failures recorded only in the message's `unvouched`
        stream entry, and how many recipients beyond MAX_RECIPIENTS were not read.

        Only the recipients an authentic VERP address (or its token) names are evidence: a bounce is
        written by whoever sends it. The others get no key of their own and never score, unless the
        operator opts in ([policy] require_verp = false) for bounces that came to no signed address."""
        classification, voucher = recording.classification, recording.voucher
        vouched = voucher.vouched
        opt_in = not self.settings.policy.require_verp and not voucher.token_recipients
        reported = [*classification.failures, *classification.delays]
        items: list[Item] = []
        loose: list[Failure] = []
        for n, failure in enumerate(reported[:MAX_RECIPIENTS]):
            mine = failure.recipient in vouched
            if mine or opt_in:
                delayed = n >= len(classification.failures)
                items.append(self._item(recording, failure, delayed=delayed, mine=mine))
            else:
                loose.append(failure)
        if not items and not loose:
            other = _NON_FAILURE_KINDS[classification.message_type]
            items = [Item(a, Effect.NONE, recording.event(other, a)) for a in vouched]
        cut = max(0, len(reported) - MAX_RECIPIENTS)
        if cut:
            log.warning("%s recipients named; the first %s recorded", len(reported), MAX_RECIPIENTS)
        return items, loose, cut

    def _item(self, recording: _Recording, failure: Failure, *, delayed: bool, mine: bool) -> Item:
        """One reported recipient's item: a failure as the rules assess it, a delay never scored; `mine`:
        the authentic VERP address names it (then, and only then, the replay check applies)."""
        if delayed:
            kind, effect, note = EventKind.DELAYED, Effect.NONE, ""
        else:
            assessment = assess(failure.kind, failure.reason, self.rules)
            kind, effect, note = EventKind(failure.kind.value), assessment.effect, assessment.why
        event = recording.event(kind, failure.recipient, failure, effect, note)
        verp_id = recording.voucher.verp_id if mine else ""
        return Item(failure.recipient, effect, event, authentic=mine, verp_id=verp_id)

    def record_loop(self, arrival: Arrival, *, signals: tuple[str, ...]) -> None:
        """Record a message the adapter held back as part of a mail loop (global stream only); its `raw`
        may be the header block alone."""
        rcpt = arrival.envelope_rcpt or ""
        message_id = ids.message_id(arrival.raw)  # read once: the dedup id is made from it too
        self.store.log_event(
            Event(
                at=self.clock(),
                kind=EventKind.LOOP,
                source=arrival.source,
                address=normalise(rcpt) or rcpt,
                id=ids.identity_from(arrival.raw, message_id),
                message_id=message_id or None,
                client=arrival.client_addr,
                queue_id=arrival.queue_id,
                note=",".join(signals),
            )
        )

    def is_suppressed(self, address: str) -> bool:
        """True when the address must not be mailed (any disabled state). Raises StoreUnavailable."""
        normal = normalise(address)
        return normal is not None and self.store.is_suppressed(normal)

    def register_token(
        self, recipients: Sequence[str], *, message_id: str | None, sender: str, context: str
    ) -> str:
        """Store the recipients behind a multi-recipient VERP token; returns the token (16 characters
        of [a-z2-7], 80 random bits). Kept for the VERP validity plus a day. Raises StoreUnavailable."""
        token = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
        normal = [n for n in (normalise(r) for r in recipients) if n]
        fields = {"recipients": "\n".join(normal), "sender": sender, "context": context}
        if message_id:
            fields["message_id"] = message_id
        self.store.put_token(token, fields, ttl=(self.settings.verp.max_age_days + 1) * 86_400)
        return token

    def record_smtp_failure(
        self, address: str, code: int, status: str | None, text: str, *, message_id: str | None = None
    ) -> Outcome:
        """Record a failure reply the application got when submitting mail (Launchpad's SMTP-time
        bounces), judged as the same reply inside a bounce is (core.classify.judge_smtp_reply). With
        `message_id`, recording the same failure again counts once.
        Raises ValueError for a bad address, code or status; StoreUnavailable."""
        normal = normalise(address)
        if normal is None:
            raise ValueError(f"not an address: {address!r}")
        failure = judge_smtp_reply(normal, code, status, text)
        classification = Classification(
            MessageType.BOUNCE, failures=(failure,), original_message_id=message_id
        )
        now = self.clock()
        event_id = ids.smtp_time_id(message_id, code, status)
        assessment = assess(failure.kind, failure.reason, self.rules)
        item = Item(
            normal,
            assessment.effect,
            Event(
                at=now,
                kind=EventKind(failure.kind.value),
                source=Source.SMTP_TIME,
                address=normal,
                id=event_id,
                message_id=message_id,
                status=failure.status,
                reason=failure.reason.value,
                diagnostic=f"smtp; {code} {text}".strip(),
                effect=assessment.effect.value,
                note=assessment.why,
            ),
        )
        (result,) = self.store.record([item], now=now, rules=self.rules)
        return Outcome(classification, recorded=(self._decision(item, result),), event_id=event_id)

    def _decision(self, item: Item, result: Result) -> Decision:
        return Decision(
            address=item.address,
            kind=item.event.kind,
            effect=item.effect,
            state=result.state,
            score=result.score,
            threshold=self.rules.threshold,
            soft_count=result.soft_count,
            status=item.event.status,
            reason=item.event.reason,
            scored=result.scored,
            duplicate=result.duplicate,
            disabled=result.disabled,
            reached=result.reached,
            why=result.why or item.event.note,
        )


def record_smtp_failure(  # noqa: PLR0913 - the applications' API (docs/redis.md): the reply as SMTP gave it, then options
    address: str,
    code: int,
    status: str | None = None,
    text: str = "",
    *,
    message_id: str | None = None,
    settings: config.Settings | None = None,
) -> Outcome:
    """For applications: record a failure reply got at submission, as `bouncekeeper record` does.

    Opens the store the settings name (default: $BOUNCEKEEPER_CONFIG, else the built-in defaults) for
    this one call. An application recording many should keep a `Service` open instead. Why a function
    beside `Service.record_smtp_failure`: it is the documented one-call API for applications
    (docs/redis.md), which hold no Service; it only opens one, calls the method and closes it.
    Raises ValueError for bad input and StoreUnavailable when Redis is unreachable.
    """
    service = Service.open(settings or config.load())
    try:
        return service.record_smtp_failure(address, code, status, text, message_id=message_id)
    finally:
        service.close()


class _Origin(TypedDict):
    """What every event of one message shares: when it was recorded, where it came from, its dedup id."""

    at: float
    source: Source
    id: str
    client: str | None
    queue_id: str | None


@dataclass(frozen=True, slots=True)
class _Recording:
    """One message recorded for one envelope recipient: what every event it writes shares."""

    arrival: Arrival
    now: float
    event_id: str
    classification: Classification
    voucher: Voucher

    @property
    def origin(self) -> _Origin:
        arrival = self.arrival
        return _Origin(
            at=self.now, source=arrival.source, id=self.event_id, client=arrival.client_addr,
            queue_id=arrival.queue_id,
        )  # fmt: skip

    def event(
        self,
        kind: EventKind,
        address: str,
        failure: Failure | None = None,
        effect: Effect = Effect.NONE,
        note: str = "",
    ) -> Event:
        """An event under an address the VERP address vouched for (or the operator opted in)."""
        return Event(
            kind=kind,
            address=address,
            message_id=self.classification.original_message_id or self.voucher.message_id,
            status=failure.status if failure else None,
            reason=failure.reason.value if failure else None,
            diagnostic=failure.diagnostic if failure else "",
            remote_mta=failure.remote_mta if failure else None,
            context=self.voucher.context,
            sender=self.voucher.sender,
            effect=effect.value,
            note=note,
            **self.origin,
        )

    def stream_event(self, kind: EventKind, note: str, address: str | None = None) -> Event:
        """An event of the message for the global stream only: no VERP address vouched for it (no
        context, sender or effect)."""
        message_id = self.classification.original_message_id
        return Event(kind=kind, address=address, message_id=message_id, note=note, **self.origin)


def _unvouched_note(loose: int, cut: int, *, token: bool) -> str:
    parts = []
    if loose:
        why = "not recipients of the token's message" if token else "no authentic VERP address for them"
        parts.append(f"{loose} recipient(s) unscored: {why}" + ("" if token else " (require_verp)"))
    if cut:
        parts.append(f"{MAX_RECIPIENTS + cut} named, {cut} beyond the first {MAX_RECIPIENTS} not read")
    return "; ".join(parts)


def _named(failure: Failure) -> str:
    """One unvouched recipient in its message's stream entry: `address:kind:status`."""
    return f"{failure.recipient}:{failure.kind.value}:{failure.status or '-'}"


__all__ = [
    "Decision",
    "Outcome",
    "Service",
    "Source",
    "StoreUnavailable",
    "record_smtp_failure",
    "rules_from",
]
