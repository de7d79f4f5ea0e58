"""The store's side of notifications: state changes put an outbox entry in the same Lua step.

Runs on one redis-server (XADD inside the script) and on a three-master cluster (the script fills the
address's pending list in its own slot; the notifier relays it into the stream).
"""

from __future__ import annotations

import dataclasses

import pytest

from bouncekeeper import config
from bouncekeeper.core.scoring import DAY, Effect, Mode, Rules, State
from bouncekeeper.daemons import notify, webhook
from bouncekeeper.store import Outbox, Store
from bouncekeeper.store.event import Event, EventKind, Source
from bouncekeeper.store.model import Item
from tests.store.conftest import OpenStore
from tests.support.http_receiver import Receiver

T0 = 1_763_769_600.0
PREFIX = "bk:"
ENFORCE = Rules(mode=Mode.ENFORCE, breaker_addresses=0, hard_threshold=2)
SECRET = b"0123456789abcdef-outbox"


@pytest.fixture
def store(open_store: OpenStore) -> Store:
    return open_store(prefix=PREFIX)


_ids = iter(range(10**9))


def item(address: str = "alice@example.org", effect: Effect = Effect.HARD, **event: str) -> Item:
    kind = {Effect.HARD: EventKind.PERMANENT, Effect.SOFT: EventKind.TEMPORARY}.get(
        effect, EventKind.AUTOREPLY
    )
    values: dict[str, str] = {
        "status": "5.1.1",
        "reason": "userunknown",
        "sender": "no-reply@app.example.org",
        "context": "news",
    }
    values.update(event)
    return Item(
        address,
        effect,
        Event(at=T0, kind=kind, source=Source.CLI, address=address, id=f"e{next(_ids)}", **values),
    )


def outbox(store: Store) -> list[dict[str, str]]:
    """The outbox stream's entries (after the cluster relay, which is a no-op on one server)."""
    Outbox(store).relay_pending(1_000_000)
    return [dict(fields) for _id, fields in store._client.xrange(store.keys.outbox)]


def test_disabling_puts_one_entry_with_its_fields(store: Store) -> None:
    store.record([item()], now=T0, rules=ENFORCE)
    assert outbox(store) == []  # score 1 of 2: no state change, nothing to say
    first = item()
    result = store.record([first], now=T0 + DAY, rules=ENFORCE)[0]
    assert result.disabled
    (entry,) = outbox(store)
    assert entry == {
        "type": "disabled",
        "address": "alice@example.org",
        "state": "disabled-bounces",
        "kind": "permanent",
        "reason": "userunknown",
        "status": "5.1.1",
        "event_id": first.event.id,
        "sender": "no-reply@app.example.org",
        "context": "news",
        "ts": repr(T0 + DAY),
    }
    # The same bounce again, and more bounces for the disabled address: no more entries.
    store.record([first], now=T0 + DAY, rules=ENFORCE)
    store.record([item()], now=T0 + 2 * DAY, rules=ENFORCE)
    assert len(outbox(store)) == 1


def test_observe_mode_announces_nothing(store: Store) -> None:
    rules = dataclasses.replace(ENFORCE, mode=Mode.OBSERVE)
    for d in range(3):
        assert store.record([item()], now=T0 + d * DAY, rules=rules)[0].reached or d == 0
    assert outbox(store) == []


def test_soft_failures_escalating_to_hard_are_announced(store: Store) -> None:
    rules = dataclasses.replace(ENFORCE, soft_threshold=2, hard_threshold=5)
    store.record([item(effect=Effect.SOFT)], now=T0, rules=rules)
    store.record([item(effect=Effect.SOFT)], now=T0 + 1, rules=rules)
    assert [e["type"] for e in outbox(store)] == ["escalated"]


def test_every_hard_bounce_when_configured(store: Store) -> None:
    store.notify_hard_bounces = True
    rules = dataclasses.replace(ENFORCE, hard_threshold=3)
    for d in range(3):
        store.record([item()], now=T0 + d * DAY, rules=rules)
    store.record([item(effect=Effect.SOFT)], now=T0 + 4 * DAY, rules=rules)
    assert [e["type"] for e in outbox(store)] == ["hard_bounce", "hard_bounce", "disabled", "hard_bounce"]


def test_admin_enable_and_disable_announce_only_real_changes(store: Store) -> None:
    address = "bob@example.org"

    def act(action: str, state: State | None = None) -> None:
        kind = EventKind.ENABLED if action == "enable" else EventKind.DISABLED
        store.admin(
            address, action, Event(at=T0, kind=kind, source=Source.HTTP, address=address), state=state
        )

    act("enable")  # already active: nothing changes
    act("disable", State.DISABLED_ADMIN)
    act("disable", State.DISABLED_ADMIN)  # already disabled
    act("enable")
    entries = outbox(store)
    assert [(e["type"], e["state"]) for e in entries] == [
        ("disabled", "disabled-admin"),
        ("enabled", "active"),
    ]
    assert {e["address"] for e in entries} == {address}


def test_a_disable_reaches_the_application_through_the_notifier(store: Store) -> None:
    receiver = Receiver().start()
    try:
        target = config.NotifyTarget(
            name="app",
            senders=("@app.example.org",),
            url=receiver.url + "/emails/{address}/suspend",
            secret_file="k",
        )
        settings = dataclasses.replace(config.NotifySettings(targets=(target,)), poll=0.05)
        notifier = notify.Notifier(
            store, settings, secrets={"app": SECRET}, consumer="t", relay=store.cluster
        )
        notifier.ensure_group()
        for d in range(2):
            store.record([item("carol+tag@example.org")], now=T0 + d * DAY, rules=ENFORCE)
        for _ in range(20):
            notifier.run_once(block=True)
            if receiver.delivered():
                break
        (request,) = receiver.delivered()
        assert request.path == "/emails/carol%2Btag@example.org/suspend"
        assert request.json()["type"] == "disabled"
        assert webhook.verify(
            SECRET,
            request.headers[webhook.TIMESTAMP_HEADER],
            request.body,
            request.headers[webhook.SIGNATURE_HEADER],
            now=float(request.headers[webhook.TIMESTAMP_HEADER]),
        )
        notifier.run_once()
        assert store._client.xlen(store.keys.outbox) == 0
    finally:
        receiver.stop()
