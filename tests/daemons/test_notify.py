"""The webhook notifier against a real Redis stream and a real HTTP receiver on loopback."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import cast

import pytest
import redis

from bouncekeeper import cli, config
from bouncekeeper.daemons import notify, webhook
from bouncekeeper.store import Outbox, Store
from bouncekeeper.store.keys import Keys
from bouncekeeper.store.outbox import GROUP
from tests.support.http_receiver import Receiver, Request
from tests.support.redis_server import RedisServer

PREFIX = "bk:"
SECRET = b"0123456789abcdef-app-secret"
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def client(redis_db: RedisServer) -> Iterator[redis.Redis]:
    c = redis_db.client()
    yield c
    c.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def target(receiver: Receiver, **overrides: object) -> config.NotifyTarget:
    values: dict[str, object] = {
        "name": "app",
        "senders": ("no-reply@app.example.org",),
        "url": receiver.url + "/emails/{address}/suspend",
        "secret_file": "/unused-in-tests",
    }
    values.update(overrides)
    return config.NotifyTarget(**values)  # type: ignore[arg-type]


def make_notifier(
    client: redis.Redis, targets: tuple[config.NotifyTarget, ...], *, consumer: str = "n1", **settings: object
) -> notify.Notifier:
    values: dict[str, object] = {"backoff_initial": 0.02, "backoff_max": 0.2, "poll": 0.05, "max_attempts": 5}
    values.update(settings)
    ns = dataclasses.replace(config.NotifySettings(targets=targets), **values)  # type: ignore[arg-type]
    notifier = notify.Notifier(
        store_on(client), ns, secrets={t.name: SECRET for t in targets}, consumer=consumer
    )
    notifier.ensure_group()
    return notifier


def enqueue(client: redis.Redis, address: str, kind: str = "disabled", **fields: str) -> str:
    """An outbox entry as the store writes it in its state-change script."""
    entry = dict.fromkeys(notify.FIELDS, "")
    entry.update(
        type=kind,
        address=address,
        state=kind,
        kind="permanent",
        reason="userunknown",
        status="5.1.1",
        event_id=f"ev-{address}-{kind}",
        sender="no-reply@app.example.org",
        ts="1700000000",
    )
    entry.update(fields)
    return client.xadd(Keys(PREFIX).outbox, entry).decode()  # type: ignore[arg-type, union-attr]


def drain(notifier: notify.Notifier, done: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "notifier did not finish in time"
        notifier.run_once(block=True)


def outbox_empty(client: redis.Redis) -> bool:
    return client.xlen(Keys(PREFIX).outbox) == 0


def store_on(client: redis.Redis) -> Store:
    return Store(client, config.RedisSettings(prefix=PREFIX))


def delivery_counts(client: redis.Redis) -> dict[tuple[str, str], float]:
    """What `bouncekeeper http` shows in /metrics of the notifier's deliveries."""
    return dict(Outbox(store_on(client)).delivery_counts())


def assert_signed(request: Request) -> None:
    headers = request.headers
    assert webhook.verify(
        SECRET,
        headers[webhook.TIMESTAMP_HEADER],
        request.body,
        headers[webhook.SIGNATURE_HEADER],
        now=time.time(),
    )
    body = request.json()
    assert headers["X-Bouncekeeper-Event"] == body["type"]


# --- routing and signatures (pure) ------------------------------------------------------------------


def test_route_picks_target_by_sender_then_context_then_default() -> None:
    url = "http://x/{address}"
    app = config.NotifyTarget(name="app", senders=("@app.example.org",), url=url, secret_file="k")
    wiki = config.NotifyTarget(name="wiki", contexts=("wiki",), url=url, secret_file="k")
    other = config.NotifyTarget(name="other", default=True, batch_url="http://x/b", secret_file="k")
    targets = (app, wiki, other)
    by_sender = notify.route({"type": "disabled", "sender": "No-Reply@APP.example.org"}, targets)
    assert [c.key for c in by_sender] == ["app/url"]
    assert [c.key for c in notify.route({"type": "enabled", "context": "wiki"}, targets)] == ["wiki/url"]
    assert [c.key for c in notify.route({"type": "enabled", "sender": "x@y.org"}, targets)] == ["other/batch"]
    assert [c.key for c in notify.route({"type": "enabled", notify.ONLY_TARGET: "wiki/url"}, targets)] == [
        "wiki/url"
    ]


def test_route_respects_the_event_filter() -> None:
    t = config.NotifyTarget(
        name="a", default=True, url="http://x/{address}", secret_file="k", events=("disabled",)
    )
    assert notify.route({"type": "hard_bounce"}, (t,)) == []
    assert len(notify.route({"type": "disabled"}, (t,))) == 1


def test_address_is_url_encoded_in_the_template() -> None:
    url = notify.address_url("https://app.example.org/emails/{address}/suspend", "a+b/c@example.org")
    assert url == "https://app.example.org/emails/a%2Bb%2Fc@example.org/suspend"


def test_signature_verifies_and_rejects_tampering_and_old_timestamps() -> None:
    sig = webhook.sign(SECRET, "1700000000", b'{"a":1}')
    assert webhook.verify(SECRET, "1700000000", b'{"a":1}', sig, now=1700000010)
    assert not webhook.verify(SECRET, "1700000000", b'{"a":2}', sig, now=1700000010)
    assert not webhook.verify(b"another-secret-0000", "1700000000", b'{"a":1}', sig, now=1700000010)
    assert not webhook.verify(SECRET, "1700000000", b'{"a":1}', sig, now=1700009999)


def test_target_without_address_placeholder_is_a_config_error() -> None:
    with pytest.raises(config.ConfigError, match=r"notify\.targets\[0\].*\{address\}"):
        config.loads('[[notify.targets]]\nname = "a"\nurl = "http://x/"\nsecret_file = "/k"\n')


def test_duplicate_target_names_are_a_config_error() -> None:
    text = '[[notify.targets]]\nname = "a"\nurl = "http://x/{address}"\nsecret_file = "/k"\n' * 2
    with pytest.raises(config.ConfigError, match="duplicate target names: a"):
        config.loads(text)


# --- delivery through a real receiver ---------------------------------------------------------------


def test_every_notification_arrives_once_after_the_receiver_recovers(
    client: redis.Redis, receiver: Receiver
) -> None:
    receiver.script = [503, 500, 503, 429, 502]  # sick for five requests, then healthy
    addresses = [f"user{i}@example.org" for i in range(8)]
    for address in addresses:
        enqueue(client, address)
    notifier = make_notifier(client, (target(receiver),))
    drain(notifier, lambda: outbox_empty(client))

    delivered = receiver.delivered()
    ids = Counter(r.json()["event_id"] for r in delivered)
    assert ids == Counter(f"ev-{a}-disabled" for a in addresses)  # each exactly once
    assert len(receiver.requests) == len(addresses) + 5  # the five failures were retried, nothing more
    for request in delivered:
        assert_signed(request)
    assert {r.path for r in delivered} == {f"/emails/{a}/suspend" for a in addresses}
    assert client.xpending(Keys(PREFIX).outbox, GROUP)["pending"] == 0
    assert client.xlen(Keys(PREFIX).outbox_dead) == 0
    assert client.keys(Keys(PREFIX).outbox_progress("*")) == []
    assert delivery_counts(client) == {("app", "retry"): 5, ("app", "delivered"): 8}


def test_receiver_down_then_up_gets_everything(client: redis.Redis, receiver: Receiver) -> None:
    port = receiver.port
    receiver.stop()  # connection refused from now on
    for i in range(3):
        enqueue(client, f"down{i}@example.org")
    notifier = make_notifier(client, (target(receiver),))
    for _ in range(3):
        notifier.run_once(block=True)  # attempts fail: refused
    assert client.xlen(Keys(PREFIX).outbox) == 3
    receiver.port = port
    receiver.start()
    drain(notifier, lambda: outbox_empty(client))
    assert sorted(r.json()["address"] for r in receiver.delivered()) == [
        f"down{i}@example.org" for i in range(3)
    ]


def test_a_notifier_started_while_redis_is_down_waits_for_it(
    redis_db: RedisServer, client: redis.Redis, receiver: Receiver
) -> None:
    redis_db.stop()
    settings = dataclasses.replace(config.NotifySettings(targets=(target(receiver),)), poll=0.05)
    notifier = notify.Notifier(store_on(client), settings, secrets={"app": SECRET}, consumer="n1")
    stop = threading.Event()
    worker = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
    worker.start()
    try:
        time.sleep(0.3)
        assert worker.is_alive(), "the notifier gave up while Redis was down"
        redis_db.start()
        enqueue(client, "late@example.org")
        deadline = time.monotonic() + 15
        while not receiver.delivered():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(10)
    assert [r.json()["address"] for r in receiver.delivered()] == ["late@example.org"]


def test_a_4xx_is_dead_lettered_at_once_and_replay_delivers_it(
    client: redis.Redis, receiver: Receiver
) -> None:
    receiver.script = [404]
    enqueue(client, "gone@example.org")
    notifier = make_notifier(client, (target(receiver),))
    drain(notifier, lambda: outbox_empty(client))
    assert len(receiver.requests) == 1  # no blind retry of a 4xx
    (letter,) = notify.list_dead(Outbox(store_on(client)))
    assert letter.fields["target"] == "app/url"
    assert letter.fields["http_status"] == "404"
    assert letter.fields["attempts"] == "1"
    assert letter.fields["address"] == "gone@example.org"

    (new_id,) = notify.replay(Outbox(store_on(client)), [letter.id])
    assert client.xlen(Keys(PREFIX).outbox_dead) == 0
    drain(notifier, lambda: outbox_empty(client))
    assert [r.json()["event_id"] for r in receiver.delivered()] == ["ev-gone@example.org-disabled"]
    assert receiver.delivered()[0].json()["outbox_id"] == new_id


def test_after_max_attempts_it_goes_to_the_dead_letter_stream(
    client: redis.Redis, receiver: Receiver
) -> None:
    receiver.default = 503
    enqueue(client, "flaky@example.org")
    notifier = make_notifier(client, (target(receiver),), max_attempts=3)
    drain(notifier, lambda: outbox_empty(client))
    assert len(receiver.requests) == 3
    (letter,) = notify.list_dead(Outbox(store_on(client)))
    assert letter.fields["attempts"] == "3"
    assert letter.fields["error"] == "HTTP 503"


def test_a_receiver_slower_than_the_timeout_is_retried(client: redis.Redis, receiver: Receiver) -> None:
    receiver.delays = [1.0]  # the first request stalls past the target's 0.2 s timeout
    enqueue(client, "slow@example.org")
    notifier = make_notifier(client, (target(receiver, timeout=0.2),))
    drain(notifier, lambda: outbox_empty(client))
    assert delivery_counts(client) == {("app", "retry"): 1, ("app", "delivered"): 1}
    # The stalled request may still have been processed: at least once, same event_id to dedupe on.
    time.sleep(1.0)
    assert {r.json()["event_id"] for r in receiver.requests} == {"ev-slow@example.org-disabled"}


def test_retry_after_is_honoured(client: redis.Redis, receiver: Receiver) -> None:
    receiver.script = [429]
    receiver.extra_headers = {"Retry-After": "0.4"}
    enqueue(client, "slow@example.org")
    notifier = make_notifier(client, (target(receiver),), backoff_max=5.0)
    start = time.monotonic()
    drain(notifier, lambda: outbox_empty(client))
    assert time.monotonic() - start >= 0.35  # waited for Retry-After, not backoff_initial (0.02 s)


def test_unrouted_event_is_dead_lettered_not_dropped(client: redis.Redis, receiver: Receiver) -> None:
    enqueue(client, "orphan@example.org", sender="someone@else.example")
    notifier = make_notifier(client, (target(receiver),))
    drain(notifier, lambda: outbox_empty(client))
    assert receiver.requests == []
    (letter,) = notify.list_dead(Outbox(store_on(client)))
    assert "no target matches" in letter.fields["error"]


def test_batch_callback_receives_the_list_of_addresses(client: redis.Redis, receiver: Receiver) -> None:
    batch = target(receiver, url="", batch_url=receiver.url + "/add_bounced_subscribers", batch_size=3)
    for i in range(5):
        enqueue(client, f"b{i}@example.org")
    enqueue(client, "back@example.org", kind="enabled")
    notifier = make_notifier(client, (batch,))
    drain(notifier, lambda: outbox_empty(client))
    bodies = [r.json() for r in receiver.delivered()]
    disabled = [b for b in bodies if b["type"] == "disabled"]
    assert sorted(a for b in disabled for a in b["addresses"]) == [f"b{i}@example.org" for i in range(5)]
    assert max(len(b["addresses"]) for b in disabled) == 3  # batch_size
    assert [b["addresses"] for b in bodies if b["type"] == "enabled"] == [["back@example.org"]]
    for request in receiver.delivered():
        assert_signed(request)


def test_url_and_batch_targets_both_get_it_and_one_failing_does_not_resend_the_other(
    client: redis.Redis, receiver: Receiver
) -> None:
    other = Receiver(script=[503, 503]).start()
    try:
        both = target(receiver, batch_url=other.url + "/batch")
        enqueue(client, "two@example.org")
        notifier = make_notifier(client, (both,))
        drain(notifier, lambda: outbox_empty(client))
        assert len(receiver.requests) == 1  # the URL channel succeeded once and was not repeated
        assert len(other.delivered()) == 1
    finally:
        other.stop()


def test_a_restarted_notifier_resumes_without_loss_or_duplicates(
    client: redis.Redis, receiver: Receiver
) -> None:
    # The first notifier delivers 2, then the receiver fails and the notifier "dies" mid-backoff.
    receiver.script = [200, 200]
    receiver.default = 503
    for i in range(5):
        enqueue(client, f"r{i}@example.org")
    first = make_notifier(client, (target(receiver),), backoff_initial=0.05)
    first.run_once()
    assert len(receiver.delivered()) == 2
    del first  # its in-memory state is gone; only Redis remembers
    receiver.default = 200
    # Same consumer name: reads its own pending entries first.
    second = make_notifier(client, (target(receiver),))
    drain(second, lambda: outbox_empty(client))
    assert Counter(r.json()["address"] for r in receiver.delivered()) == Counter(
        f"r{i}@example.org" for i in range(5)
    )


def test_another_notifier_takes_over_entries_left_idle(client: redis.Redis, receiver: Receiver) -> None:
    receiver.default = 503
    for i in range(3):
        enqueue(client, f"idle{i}@example.org")
    make_notifier(client, (target(receiver),), consumer="dead-host").run_once()
    receiver.default = 200
    time.sleep(0.15)
    other = make_notifier(client, (target(receiver),), consumer="live-host", claim_idle=0.1)
    drain(other, lambda: outbox_empty(client))
    assert sorted(r.json()["address"] for r in receiver.delivered()) == [
        f"idle{i}@example.org" for i in range(3)
    ]


def test_notify_command_survives_kill_and_restart(
    tmp_path: pathlib.Path, redis_db: RedisServer, client: redis.Redis
) -> None:
    # The real `bouncekeeper notify` process, SIGKILLed while it delivers, then started again.
    slow = Receiver().start()
    original_handler = slow._server.RequestHandlerClass  # type: ignore[union-attr]

    class Slow(original_handler):  # type: ignore[misc, valid-type]
        def do_POST(self) -> None:
            time.sleep(0.01)
            super().do_POST()

    slow._server.RequestHandlerClass = Slow  # type: ignore[union-attr]
    try:
        key = tmp_path / "app.key"
        key.write_bytes(SECRET)
        conf = tmp_path / "bk.toml"
        conf.write_text(
            f'[redis]\nurl = "{redis_db.url}"\nprefix = "{PREFIX}"\n'
            '[log]\nlevel = "WARNING"\n'
            '[notify]\nconsumer = "cli"\npoll = 0.2\nbackoff_initial = 0.05\n'
            f'[[notify.targets]]\nname = "app"\nsenders = ["no-reply@app.example.org"]\n'
            f'url = "{slow.url}/e/{{address}}"\nsecret_file = "{key}"\n'
        )
        total = 200
        for i in range(total):
            enqueue(client, f"k{i}@example.org")
        argv = [sys.executable, "-m", "bouncekeeper.cli", "--config", str(conf), "notify"]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
        proc = subprocess.Popen(argv, env=env)
        deadline = time.monotonic() + 20
        while len(slow.delivered()) < 40:
            assert time.monotonic() < deadline
            assert proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = len(slow.requests)
        assert 0 < before < total
        proc = subprocess.Popen(argv, env=env)
        deadline = time.monotonic() + 30
        while client.xlen(Keys(PREFIX).outbox):
            assert time.monotonic() < deadline
            assert proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        seen = Counter(r.json()["address"] for r in slow.delivered())
        assert set(seen) == {f"k{i}@example.org" for i in range(total)}  # nothing lost
        # At-least-once: only a request in flight at the SIGKILL (2xx sent, not yet recorded) may repeat.
        assert sum(seen.values()) - total <= 1
    finally:
        slow.stop()


def test_dead_letters_cli_lists_and_replays(
    tmp_path: pathlib.Path, redis_db: RedisServer, client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    client.xadd(
        Keys(PREFIX).outbox_dead,
        {
            "type": "disabled",
            "address": "x@example.org",
            "target": "app/url",
            "attempts": "4",
            "error": "HTTP 410",
        },
    )
    conf = tmp_path / "bk.toml"
    conf.write_text(f'[redis]\nurl = "{redis_db.url}"\nprefix = "{PREFIX}"\n')
    assert cli.main(["--config", str(conf), "notify", "dead-letters", "list"]) == 0
    out = capsys.readouterr().out
    for word in ("x@example.org", "HTTP 410", "app/url"):
        assert word in out
    assert cli.main(["--config", str(conf), "notify", "dead-letters", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["fields"]["address"] == "x@example.org"
    assert cli.main(["--config", str(conf), "notify", "dead-letters", "replay"]) == 64
    assert cli.main(["--config", str(conf), "notify", "dead-letters", "replay", "--all"]) == 0
    assert client.xlen(Keys(PREFIX).outbox_dead) == 0
    (entry,) = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(Keys(PREFIX).outbox))
    assert entry[1][b"only_target"] == b"app/url"
    assert entry[1][b"address"] == b"x@example.org"
