"""The Service API the adapters share, against a real redis-server.

The classifier (core.classify) is another branch's work; these tests hand the Service Classification
objects built here, so they check what the Service does with a verdict, not the verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from bouncekeeper import config
from bouncekeeper.core import verp
from bouncekeeper.core.model import BounceKind, Classification, Failure, MessageType, Reason
from bouncekeeper.core.scoring import DAY, Mode, Rules, State
from bouncekeeper.service.bounces import (
    Arrival,
    Service,
    Source,
    StoreUnavailable,
    record_smtp_failure,
    rules_from,
)
from bouncekeeper.service.ids import identity
from bouncekeeper.store import Store
from tests.support import hostile_mail
from tests.support.redis_server import RedisServer

T0 = 1_763_769_600.0
KEYRING = verp.Keyring.from_secrets([b"0123456789abcdef0123456789abcdef"])
DOMAIN = "bounce.example.net"
RAW = b"From: MAILER-DAEMON@mx.example.org\nMessage-ID: <dsn1@mx.example.org>\n\nbody\n"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FixedClassifier:
    """Returns the verdict it was given, and remembers what it was asked."""

    def __init__(self) -> None:
        self.verdict = Classification(MessageType.UNRECOGNISED)
        self.calls: list[dict[str, object]] = []

    def __call__(
        self, raw: bytes, *, verp_recipient: str | None = None, envelope_sender: str | None = None
    ) -> Classification:
        self.calls.append({"verp_recipient": verp_recipient, "envelope_sender": envelope_sender})
        return self.verdict


@pytest.fixture
def parts(redis_db: RedisServer) -> Iterator[tuple[Service, Clock, FixedClassifier]]:
    settings = config.Settings(
        verp=config.VerpSettings(bounce_domain=DOMAIN),
        redis=config.RedisSettings(url=redis_db.url),
        policy=config.ScoringSettings(mode="enforce", hard_threshold=3, breaker_addresses=0),
    )
    clock, classifier = Clock(), FixedClassifier()
    service = Service(
        settings, Store.from_settings(settings.redis), clock=clock, classifier=classifier, keyring=KEYRING
    )
    yield service, clock, classifier
    service.close()


def bounce(
    rcpt: str, kind: BounceKind = BounceKind.PERMANENT, reason: Reason = Reason.USERUNKNOWN
) -> Classification:
    failure = Failure(
        recipient=rcpt, kind=kind, reason=reason, status="5.1.1", diagnostic="smtp; 550 5.1.1 unknown"
    )
    return Classification(MessageType.BOUNCE, failures=(failure,), original_message_id="<orig@example.net>")


def vaddr(rcpt: str, day: float = T0, context: str = "") -> str:
    return verp.encode(rcpt, keyring=KEYRING, bounce_domain=DOMAIN, day=int(day // DAY), context=context)


def test_a_verp_bounce_is_recorded_for_the_decoded_recipient(
    parts: tuple[Service, Clock, FixedClassifier],
) -> None:
    service, _clock, classifier = parts
    classifier.verdict = bounce("alice@example.org")
    outcome = service.process_bounce(
        Arrival(
            RAW,
            envelope_rcpt=vaddr("alice@example.org", context="news"),
            envelope_sender="",
            source=Source.MILTER,
            client_addr="192.0.2.1",
            queue_id="4QbX2l0zYxz9",
        )
    )
    assert classifier.calls == [{"verp_recipient": "alice@example.org", "envelope_sender": ""}]
    assert outcome.summary() == (
        "bounce recorded rcpt=alice@example.org kind=permanent status=5.1.1 reason=userunknown score=1/3"
    )
    (event,) = service.store.view("alice@example.org").events
    assert event["context"] == "news"
    assert event["client"] == "192.0.2.1"
    assert event["queue_id"] == "4QbX2l0zYxz9"
    assert event["source"] == "milter"
    assert event["message_id"] == "<orig@example.net>"


def test_the_same_bounce_delivered_twice_counts_once(parts: tuple[Service, Clock, FixedClassifier]) -> None:
    service, clock, classifier = parts
    classifier.verdict = bounce("alice@example.org")
    rcpt = vaddr("alice@example.org")
    service.process_bounce(Arrival(RAW, envelope_rcpt=rcpt, envelope_sender=None, source=Source.LMTP))
    clock.now += DAY  # a retry days later: a new day, but the same bounce
    again = service.process_bounce(
        Arrival(b"Received: by us\n" + RAW, envelope_rcpt=rcpt, envelope_sender=None, source=Source.LMTP)
    )
    assert again.recorded[0].duplicate
    assert again.recorded[0].score == 1
    assert "duplicate" in again.summary()


def test_identity_ignores_trace_headers_added_on_the_way(
    parts: tuple[Service, Clock, FixedClassifier],
) -> None:
    assert identity(RAW) == identity(b"Received: from x\r\n" + RAW)
    assert identity(b"Subject: a\n\nbody one\n") != identity(b"Subject: a\n\nbody two\n")


def test_forged_verp_is_recorded_with_the_client_and_never_scored(
    parts: tuple[Service, Clock, FixedClassifier],
) -> None:
    service, _clock, classifier = parts
    classifier.verdict = bounce("alice@example.org")
    good = vaddr("alice@example.org")
    tampered = good.replace("alice=example.org", "bob=example.org")
    outcome = service.process_bounce(
        Arrival(
            RAW, envelope_rcpt=tampered, envelope_sender="", source=Source.MILTER, client_addr="203.0.113.9"
        )
    )
    assert outcome.forged
    assert not outcome.recorded
    assert "client=203.0.113.9" in outcome.summary()
    assert not service.store.view("bob@example.org").tracked
    assert not service.store.view("alice@example.org").tracked
    (_, fields), *_ = service.store.recent(1)
    assert fields["kind"] == "forged"
    assert fields["client"] == "203.0.113.9"


def test_an_expired_verp_address_counts_as_forged(parts: tuple[Service, Clock, FixedClassifier]) -> None:
    service, _clock, classifier = parts
    classifier.verdict = bounce("alice@example.org")
    old = vaddr("alice@example.org", day=T0 - 30 * DAY)
    assert service.process_bounce(
        Arrival(RAW, envelope_rcpt=old, envelope_sender="", source=Source.MILTER)
    ).forged


def test_autoreply_is_recorded_never_scored(parts: tuple[Service, Clock, FixedClassifier]) -> None:
    service, _clock, classifier = parts
    classifier.verdict = Classification(MessageType.AUTOREPLY, loop_signals=("auto-submitted:auto-replied",))
    outcome = service.process_bounce(
        Arrival(RAW, envelope_rcpt=vaddr("alice@example.org"), envelope_sender="", source=Source.MILTER)
    )
    assert outcome.summary().startswith("autoreply recorded rcpt=alice@example.org kind=autoreply")
    view = service.store.view("alice@example.org")
    assert not view.tracked
    assert view.events[0]["kind"] == "autoreply"


def test_non_scoring_reason_is_recorded_not_scored(parts: tuple[Service, Clock, FixedClassifier]) -> None:
    service, _clock, classifier = parts
    classifier.verdict = bounce("alice@example.org", BounceKind.TEMPORARY, Reason.SPAMDETECTED)
    outcome = service.process_bounce(
        Arrival(RAW, envelope_rcpt=vaddr("alice@example.org"), envelope_sender=None, source=Source.CLI)
    )
    assert not outcome.recorded[0].scored
    assert service.store.view("alice@example.org").soft_count == 0


def test_three_days_of_hard_bounces_suppress_the_address(
    parts: tuple[Service, Clock, FixedClassifier],
) -> None:
    service, clock, classifier = parts
    classifier.verdict = bounce("alice@example.org")
    for day in range(3):
        clock.now = T0 + day * DAY
        raw = RAW.replace(b"dsn1", f"dsn-day{day}".encode())  # a new bounce each day, of that day's mail
        rcpt = vaddr("alice@example.org", day=clock.now)
        outcome = service.process_bounce(
            Arrival(raw, envelope_rcpt=rcpt, envelope_sender=None, source=Source.LMTP)
        )
    assert outcome.recorded[0].disabled
    assert "state=disabled-bounces" in outcome.summary()
    assert service.is_suppressed("Alice@Example.ORG")
    assert not service.is_suppressed("bob@example.org")


def test_token_mode_scores_only_the_tokens_recipients(parts: tuple[Service, Clock, FixedClassifier]) -> None:
    service, _clock, classifier = parts
    token = service.register_token(
        ["a@example.org", "B@example.org"], message_id="<m@x>", sender="app@x", context="c1"
    )
    address = verp.encode_token(token, keyring=KEYRING, bounce_domain=DOMAIN, day=int(T0 // DAY))
    assert service.check_rcpt(address).token == token
    failures = (
        Failure(recipient="b@example.org", kind=BounceKind.PERMANENT, reason=Reason.USERUNKNOWN),
        Failure(recipient="stranger@example.org", kind=BounceKind.PERMANENT, reason=Reason.USERUNKNOWN),
    )
    classifier.verdict = Classification(MessageType.BOUNCE, failures=failures)
    outcome = service.process_bounce(
        Arrival(RAW, envelope_rcpt=address, envelope_sender="", source=Source.LMTP)
    )
    assert [(d.address, d.scored) for d in outcome.recorded] == [("b@example.org", True)]
    # The stranger is in the stream, with no key of its own.
    assert outcome.unvouched == ("stranger@example.org",)
    assert not service.store._client.keys("*stranger*")
    assert service.store.view("b@example.org").events[0]["context"] == "c1"


def test_smtp_time_failure_is_recorded(parts: tuple[Service, Clock, FixedClassifier]) -> None:
    service, _clock, _classifier = parts
    outcome = service.record_smtp_failure(
        "alice@example.org", 550, "5.1.1", "user unknown", message_id="<a@b>"
    )
    assert outcome.recorded[0].scored
    assert outcome.recorded[0].kind.value == "permanent"
    again = service.record_smtp_failure("alice@example.org", 550, "5.1.1", "user unknown", message_id="<a@b>")
    assert again.recorded[0].duplicate
    blocked = service.record_smtp_failure("alice@example.org", 554, "5.7.1", "blocked by policy")
    assert not blocked.recorded[0].scored
    (event, *_) = service.store.view("alice@example.org").events
    assert event["source"] == "smtp-time"


def test_store_unavailable_reaches_the_caller(
    parts: tuple[Service, Clock, FixedClassifier], redis_db: RedisServer
) -> None:
    service, _clock, classifier = parts
    classifier.verdict = bounce("alice@example.org")
    redis_db.stop()
    with pytest.raises(StoreUnavailable):
        service.process_bounce(Arrival(RAW, envelope_rcpt=None, envelope_sender=None, source=Source.MILTER))
    with pytest.raises(StoreUnavailable):
        service.is_suppressed("alice@example.org")
    # check_rcpt never needs Redis.
    assert service.check_rcpt(vaddr("alice@example.org")).status is verp.VerpStatus.VALID


def test_rules_follow_the_settings() -> None:
    rules = rules_from(config.ScoringSettings(mode="enforce", soft_window_days=2, breaker_window_minutes=5))
    assert rules == dataclasses.replace(Rules(), mode=Mode.ENFORCE, soft_window=2 * DAY, breaker_window=300)
    assert State.ACTIVE.value == "active"


def test_verp_without_keys_is_a_configuration_error(redis_db: RedisServer) -> None:
    settings = config.Settings(
        verp=config.VerpSettings(bounce_domain=DOMAIN), redis=config.RedisSettings(url=redis_db.url)
    )
    store = Store.from_settings(settings.redis)
    with pytest.raises(config.ConfigError, match="secret_files"):
        Service(settings, store)
    store.close()


def test_record_smtp_failure_function_for_applications(redis_db: RedisServer) -> None:
    settings = config.Settings(redis=config.RedisSettings(url=redis_db.url))
    outcome = record_smtp_failure("carol@example.org", 550, "5.1.1", "no such user", settings=settings)
    assert outcome.recorded[0].scored
    again = record_smtp_failure("carol@example.org", 550, settings=settings)
    assert again.recorded[0].score == 1  # the same day: the score rises once
    store = Store.from_settings(settings.redis)
    assert len(store.view("carol@example.org").events) == 2
    store.close()


def test_ingest_from_files_accepts_an_expired_but_authentic_verp(
    parts: tuple[Service, Clock, FixedClassifier],
) -> None:
    service, _clock, classifier = parts
    classifier.verdict = bounce("alice@example.org")
    old = vaddr("alice@example.org", day=T0 - 30 * DAY)
    outcome = service.process_bounce(Arrival(RAW, envelope_rcpt=old, envelope_sender="", source=Source.CLI))
    assert not outcome.forged
    assert outcome.recorded[0].scored
    assert classifier.calls[-1]["verp_recipient"] == "alice@example.org"
    tampered = old.replace("alice=example.org", "bob=example.org")
    assert service.process_bounce(
        Arrival(RAW, envelope_rcpt=tampered, envelope_sender="", source=Source.CLI)
    ).forged


def test_require_verp_scores_only_bounces_at_an_authentic_verp_address(
    parts: tuple[Service, Clock, FixedClassifier],
) -> None:
    service, clock, classifier = parts
    assert service.settings.policy.require_verp  # the default
    failures = (
        Failure(recipient="alice@example.org", kind=BounceKind.PERMANENT, reason=Reason.USERUNKNOWN),
        Failure(recipient="bob@example.org", kind=BounceKind.PERMANENT, reason=Reason.USERUNKNOWN),
    )
    classifier.verdict = Classification(MessageType.BOUNCE, failures=failures)

    def scored(
        envelope_rcpt: str | None, n: int, source: Source = Source.LMTP, on: Service = service
    ) -> list[tuple[str, bool]]:
        raw = RAW.replace(b"dsn1", f"dsn-req{n}".encode())
        outcome = on.process_bounce(
            Arrival(raw, envelope_rcpt=envelope_rcpt, envelope_sender="", source=source)
        )
        return [(d.address, d.scored) for d in outcome.recorded] + [(a, False) for a in outcome.unvouched]

    unscored = [("alice@example.org", False), ("bob@example.org", False)]
    assert scored(None, 1) == unscored  # ingest, IMAP or HTTP without an envelope recipient
    assert scored(None, 2, Source.CLI) == unscored
    assert scored("bounces@example.net", 3) == unscored  # a plain, non-VERP bounce address
    # Unscored, they made no key: one stream entry per message, which names them and says why.
    # The stream, the stats counters and a dedup mark per message (store/keys.py `unvouched`).
    assert service.store._client.dbsize() == 2 + 3
    entries = [f for _, f in service.store.recent(10)]
    assert [f["kind"] for f in entries] == ["unvouched"] * 3
    assert {f["note"] for f in entries} == {
        "2 recipient(s) unscored: no authentic VERP address for them (require_verp)"
    }
    assert entries[0]["recipients"] == "alice@example.org:permanent:- bob@example.org:permanent:-"
    # An authentic VERP address vouches for the recipient it names, and only for that one.
    assert scored(vaddr("alice@example.org"), 4) == [("alice@example.org", True), ("bob@example.org", False)]
    assert service.store.view("alice@example.org").hard_score == 1
    assert not service.store.view("bob@example.org").tracked
    # Opted in (require_verp = false), the same bounce without VERP scores both.
    policy = dataclasses.replace(service.settings.policy, require_verp=False)
    opted = Service(dataclasses.replace(service.settings, policy=policy), service.store, clock=clock,
                    classifier=classifier, keyring=KEYRING)  # fmt: skip
    assert scored(None, 5, on=opted) == [("alice@example.org", True), ("bob@example.org", True)]


def test_a_message_that_reached_a_work_cap_is_logged_with_the_caps(
    redis_db: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = config.Settings(redis=config.RedisSettings(url=redis_db.url))
    service = Service(settings, Store.from_settings(settings.redis))  # the real classifier
    raw = hostile_mail.deep_nesting(100_000)
    try:
        outcome = service.process_bounce(
            Arrival(raw, envelope_rcpt=None, envelope_sender="", source=Source.LMTP)
        )
    finally:
        service.close()
    assert outcome.classification.limits == ("mime",)
    logged = [r.getMessage() for r in caplog.records if "work caps" in r.getMessage()]
    # After the queue id prefix (whatever the context holds here): the caps and the size.
    assert [line.partition(": ")[2] for line in logged] == [
        f"classification cut short at work caps: mime ({len(raw)} bytes)"
    ]
