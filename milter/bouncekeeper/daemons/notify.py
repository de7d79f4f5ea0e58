"""Webhooks from the outbox, outside the mail path: `bouncekeeper notify`.

The store appends one entry to the Redis stream `{prefix}{outbox}:stream` in the same atomic step as a state
change (disabled, enabled, escalated, and with `notify.hard_bounces` every hard bounce). This worker
reads it through the consumer group `notify` and delivers each entry to the targets whose senders or
contexts match the original mail.

Delivery guarantees:
- An entry is acknowledged (XACK, then removed) only once every matching target has either received it
  (2xx) or it has been copied to the dead-letter stream `{prefix}{outbox}:dead`. A crash at any point
  leaves it in the group's pending list; a restarted notifier with the same consumer name reads its own
  pending entries first, and any notifier takes over entries another one left idle (XAUTOCLAIM).
- Per entry and target, `{prefix}{outbox}:state:{id}` (store/keys.py) records which targets are done and
  how many attempts were made, so a restart neither re-sends to a target that already answered 2xx nor
  forgets the backoff.
  The one window for a duplicate is a crash between a 2xx and that HSET: receivers dedupe on `event_id`
  (at-least-once, as every webhook system that survives crashes).
- Connection errors, timeouts, 5xx and 429 are retried with exponential backoff (Retry-After honoured up
  to `backoff_max`). Any other 4xx, a 3xx (we never follow a redirect with a signed body), or
  `max_attempts` failures send the notification to the dead-letter stream, from which
  `bouncekeeper notify dead-letters replay` puts it back in the outbox for that one target.

Each request is signed, and its answer judged, by webhook.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bouncekeeper import __version__, config, store
from bouncekeeper.daemons.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, Attempt, Delivery, post, sign
from bouncekeeper.log import get_logger
from bouncekeeper.store import Outbox, Store, StoreUnavailable
from bouncekeeper.store.client import CLUSTER_SCHEMES
from bouncekeeper.store.outbox import GROUP

log = get_logger("bouncekeeper.notify")  # as before the folders: log filters use it

# The fields the store writes in each outbox entry (all strings; empty when unknown).
FIELDS = ("type", "address", "state", "kind", "reason", "status", "event_id", "sender", "context", "ts")
# Added by `dead-letters replay`: deliver to this target only.
ONLY_TARGET = "only_target"


# --- routing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    """One way to deliver to one target: per-address URL or batch callback."""

    target: config.NotifyTarget
    batch: bool

    @property
    def key(self) -> str:
        return f"{self.target.name}/{'batch' if self.batch else 'url'}"


def _sender_matches(sender: str, patterns: Sequence[str]) -> bool:
    sender = sender.lower()
    return any(sender == p.lower() or (p.startswith("@") and sender.endswith(p.lower())) for p in patterns)


def route(event: Mapping[str, str], targets: Sequence[config.NotifyTarget]) -> list[Channel]:
    """The channels an outbox entry goes to: targets claiming its sender or context, else the default.

    A replayed dead letter carries `only_target` (a channel key, "app/url") and goes there alone.
    """
    kind = event.get("type", "")
    only = event.get(ONLY_TARGET, "")
    context = event.get("context", "")
    if only:
        chosen = [t for t in targets if t.name == only.rpartition("/")[0]]
    else:
        chosen = [
            t
            for t in targets
            if _sender_matches(event.get("sender", ""), t.senders) or (context and context in t.contexts)
        ]
        if not chosen:
            chosen = [t for t in targets if t.default]
    channels: list[Channel] = []
    for target in chosen:
        if kind not in target.events:
            continue
        if target.url:
            channels.append(Channel(target, batch=False))
        if target.batch_url:
            channels.append(Channel(target, batch=True))
    return [c for c in channels if not only or c.key == only]


def event_body(entry_id: str, fields: Mapping[str, str]) -> dict[str, str]:
    body = {k: fields.get(k, "") for k in FIELDS}
    body["outbox_id"] = entry_id
    return body


def address_url(template: str, address: str) -> str:
    # "@" may stand in a path segment (RFC 3986 section 3.3, pchar); "+", "/", "%" and the rest are encoded.
    return template.replace("{address}", urllib.parse.quote(address, safe="@"))


# --- the worker -------------------------------------------------------------------------------------


@dataclass
class _Pending:
    entry_id: str
    fields: dict[str, str]
    channels: dict[str, Channel]  # not yet done
    attempts: dict[str, int]
    due: dict[str, float]


Sender = Callable[[str, bytes, Mapping[str, str], float], Attempt]


class Notifier:
    def __init__(  # noqa: PLR0913 - keyword-only: from_settings' values; tests' sender and clock
        self,
        store: Store,
        settings: config.NotifySettings,
        *,
        secrets: Mapping[str, bytes],
        consumer: str,
        sender: Sender = post,
        clock: Callable[[], float] = time.time,
        relay: bool = False,
    ) -> None:
        self.box = Outbox(store)
        self.relay = relay  # Redis Cluster: move the per-address pending lists into the stream
        self._last_relay = 0.0
        self.settings = settings
        self.secrets = secrets
        self.consumer = consumer
        self.sender = sender
        self.clock = clock
        self.outbox = store.keys.outbox
        self._pending: dict[str, _Pending] = {}
        self._read_own_backlog = True
        self._last_touch = 0.0

    @classmethod
    def from_settings(cls, store: Store, settings: config.Settings, **kwargs: Any) -> Notifier:
        secrets = {
            t.name: config.read_secret(t.secret_file, f"notify.targets[{i}].secret_file", settings.source)
            for i, t in enumerate(settings.notify.targets)
        }
        consumer = settings.notify.consumer or socket.gethostname()
        kwargs.setdefault("relay", settings.redis.url.startswith(CLUSTER_SCHEMES))
        return cls(
            store,
            settings.notify,
            secrets=secrets,
            consumer=consumer,
            **kwargs,
        )

    def ensure_group(self) -> None:
        self.box.ensure_group()

    # one pass ---------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        grouped = False
        while not stop.is_set():
            try:
                if not grouped:
                    # Inside the loop: a notifier started while Redis is down (or has no master during a
                    # failover) waits for it like a running one, instead of exiting.
                    self.ensure_group()
                    grouped = True
                    log.info(
                        "notify: consumer %s of group %s reading %s (%d targets)",
                        self.consumer,
                        GROUP,
                        self.outbox,
                        len(self.settings.targets),
                    )
                self.run_once(block=True)
            except StoreUnavailable as exc:
                # Redis down: nothing is lost (the entries stay in the stream); wait and try again.
                log.warning("notify: redis error, retrying in %.0fs: %s", self.settings.poll, exc)
                stop.wait(self.settings.poll)

    def run_once(self, *, block: bool = False) -> int:
        """Fetch new and reclaimed entries, attempt every delivery that is due. Returns attempts made."""
        self._fetch(block)
        self._touch()
        return self._deliver_due()

    def _fetch(self, block: bool) -> None:
        if self.relay and self.clock() - self._last_relay >= self.settings.poll:
            moved = self.box.relay_pending(self.settings.outbox_maxlen)
            if moved:
                log.info("notify: relayed %d entries from per-address lists into the outbox", moved)
            self._last_relay = self.clock()
        if self._read_own_backlog:
            self._fetch_own_backlog()
            self._read_own_backlog = False
        self._fetch_abandoned()
        for entry_id, fields in self.box.read_new(self.consumer, 500, self._read_timeout_ms(block)):
            self._admit(entry_id, fields)

    def _fetch_own_backlog(self) -> None:
        # Our own pending entries from before a restart (same consumer name): id "0" reads the PEL.
        start = "0"
        while rows := self.box.read_own(self.consumer, start, 500):
            for entry_id, fields in rows:
                self._admit(entry_id, fields)
            start = rows[-1][0]

    def _fetch_abandoned(self) -> None:
        # Entries a dead notifier (another consumer name) left behind.
        min_idle = int(self.settings.claim_idle * 1000)
        cursor = "0-0"
        while True:
            cursor, rows, gone = self.box.claim_idle(self.consumer, min_idle, cursor, 500)
            for entry_id, fields in rows:
                self._admit(entry_id, fields)
            for entry_id in gone:
                log.info("notify: entry %s vanished from the outbox", entry_id)
            if cursor == "0-0":
                break

    def _read_timeout_ms(self, block: bool) -> int | None:
        # Wait for new entries no longer than until the next retry is due.
        if not block:
            return None
        wait = self.settings.poll
        if self._pending:
            wait = min(
                wait, max(0.0, min(min(p.due.values()) for p in self._pending.values()) - self.clock())
            )
        return max(1, int(wait * 1000))

    def _admit(self, entry_id: str, fields: dict[str, str] | None) -> None:
        if entry_id in self._pending:
            return
        if not fields:
            # XREADGROUP "0" returns deleted entries with no fields: nothing to deliver, just release it.
            self._finish(entry_id)
            return
        state = self.box.progress(entry_id)
        channels = {
            c.key: c for c in route(fields, self.settings.targets) if state.get(f"done:{c.key}") != "1"
        }
        if not channels and not any(k.startswith("done:") for k in state):
            self._dead_letter_unrouted(entry_id, fields)
            return
        if not channels:
            self._finish(entry_id)
            return
        now = self.clock()
        self._pending[entry_id] = _Pending(
            entry_id,
            fields,
            channels,
            attempts={k: int(state.get(f"attempts:{k}", "0")) for k in channels},
            due={k: float(state.get(f"next:{k}", now)) for k in channels},
        )

    def _touch(self) -> None:
        # Reset the idle time of entries we are backing off on, so that no other notifier takes them over.
        now = self.clock()
        if not self._pending or now - self._last_touch < self.settings.claim_idle / 3:
            return
        ids = list(self._pending)
        for i in range(0, len(ids), 500):
            self.box.touch(self.consumer, ids[i : i + 500])
        self._last_touch = now

    def _deliver_due(self) -> int:
        now = self.clock()
        batches: dict[tuple[str, str], list[_Pending]] = {}
        singles: list[tuple[_Pending, Channel]] = []
        for pending in list(self._pending.values()):
            for key, channel in list(pending.channels.items()):
                if pending.due[key] > now:
                    continue
                if channel.batch:
                    batches.setdefault((key, pending.fields.get("type", "")), []).append(pending)
                else:
                    singles.append((pending, channel))
        made = 0
        for pending, channel in singles:
            body = json.dumps(event_body(pending.entry_id, pending.fields), sort_keys=True).encode()
            url = address_url(channel.target.url, pending.fields.get("address", ""))
            self._settle([pending], channel, self._send(channel, url, body, pending.fields))
            made += 1
        for (key, kind), group in batches.items():
            channel = group[0].channels[key]
            size = channel.target.batch_size
            for i in range(0, len(group), size):
                chunk = group[i : i + size]
                body = json.dumps(
                    {
                        "type": kind,
                        "addresses": [p.fields.get("address", "") for p in chunk],
                        "events": [event_body(p.entry_id, p.fields) for p in chunk],
                    },
                    sort_keys=True,
                ).encode()
                self._settle(
                    chunk, channel, self._send(channel, channel.target.batch_url, body, {"type": kind})
                )
                made += 1
        return made

    def _send(self, channel: Channel, url: str, body: bytes, fields: Mapping[str, str]) -> Attempt:
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"bouncekeeper/{__version__}",
            "X-Bouncekeeper-Event": fields.get("type", ""),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secrets[channel.target.name], timestamp, body),
        }
        if fields.get("event_id"):
            headers["X-Bouncekeeper-Event-Id"] = fields["event_id"]
        return self.sender(url, body, headers, channel.target.timeout)

    def _settle(self, group: Sequence[_Pending], channel: Channel, attempt: Attempt) -> None:
        key = channel.key
        name = channel.target.name
        now = self.clock()
        for pending in group:
            address = pending.fields.get("address", "")
            tries = pending.attempts[key] + 1
            result = attempt.result
            if result is Delivery.RETRY and tries >= self.settings.max_attempts:
                result = Delivery.DEAD
            self._count(name, result)
            if result is Delivery.DELIVERED:
                if len(pending.channels) > 1:
                    # Other targets still to go: remember this one is done. (The last one needs no
                    # record: _finish acknowledges the entry right away.)
                    self.box.mark_done(pending.entry_id, key)
                log.info(
                    "notify: delivered %s %s to %s (HTTP %s)",
                    pending.fields.get("type"),
                    address,
                    key,
                    attempt.status,
                )
            elif result is Delivery.RETRY:
                delay = self._backoff(tries, attempt.retry_after)
                pending.attempts[key] = tries
                pending.due[key] = now + delay
                self.box.note_retry(pending.entry_id, key, tries, now + delay)
                log.warning(
                    "notify: %s %s to %s failed (%s), attempt %d/%d, retry in %.1fs",
                    pending.fields.get("type"), address, key, attempt.error,
                    tries, self.settings.max_attempts, delay,
                )  # fmt: skip
                continue
            else:
                self._dead_letter(pending.entry_id, pending.fields, key, tries, attempt)
                log.error(
                    "notify: %s %s to %s dead-lettered after %d attempt(s): %s",
                    pending.fields.get("type"), address, key, tries, attempt.error,
                )  # fmt: skip
            del pending.channels[key]
            if not pending.channels:
                self._finish(pending.entry_id)

    def _count(self, target: str, result: Delivery) -> None:
        # In Redis, not in this process: `bouncekeeper http` serves /metrics (metrics.NOTIFICATIONS).
        self.box.count(result.value, target)

    def _backoff(self, tries: int, retry_after: float | None) -> float:
        base = min(self.settings.backoff_max, self.settings.backoff_initial * 2 ** (tries - 1))
        if retry_after is not None:
            base = min(self.settings.backoff_max, max(base, retry_after))
        return float(base * random.uniform(0.9, 1.1))

    def _dead_letter(
        self, entry_id: str, fields: Mapping[str, str], target: str, tries: int, attempt: Attempt
    ) -> None:
        # `target` is a channel key ("app/url"): a replay goes back to that channel only.
        record = {k: v for k, v in fields.items() if k != ONLY_TARGET}
        record.update(
            {
                "outbox_id": entry_id,
                "target": target,
                "attempts": str(tries),
                "http_status": "" if attempt.status is None else str(attempt.status),
                "error": attempt.error,
                "dead_at": str(int(self.clock())),
            }
        )
        self.box.dead_letter(entry_id, record, target)

    def _dead_letter_unrouted(self, entry_id: str, fields: Mapping[str, str]) -> None:
        # No target claims it: keep it where an operator sees it (fix the config, then replay).
        only = fields.get(ONLY_TARGET, "")
        problem = f"target {only!r} is not configured" if only else "no target matches its sender or context"
        log.error("notify: %s %s: %s", fields.get("type"), fields.get("address"), problem)
        self._dead_letter(entry_id, fields, only, 0, Attempt(Delivery.DEAD, error=problem))
        self._count(only or "-", Delivery.DEAD)
        self._finish(entry_id)

    def _finish(self, entry_id: str) -> None:
        self.box.finish(entry_id)
        self._pending.pop(entry_id, None)


# --- dead letters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    id: str
    fields: dict[str, str]


def list_dead(outbox: Outbox, *, count: int = 1000) -> list[DeadLetter]:
    return [DeadLetter(i, f) for i, f in outbox.dead_letters(count)]


def replay(outbox: Outbox, ids: Sequence[str] | None = None) -> list[str]:
    """Put dead letters back in the outbox (for their one target) and remove them, atomically per entry.

    Returns the new outbox ids. `ids=None` replays all of them.
    """
    wanted = set(ids) if ids is not None else None
    new_ids: list[str] = []
    for letter in list_dead(outbox, count=1_000_000):
        if wanted is not None and letter.id not in wanted:
            continue
        entry = {k: letter.fields.get(k, "") for k in FIELDS}
        if letter.fields.get("target"):
            entry[ONLY_TARGET] = letter.fields["target"]
        new_ids.append(outbox.requeue(letter.id, entry))
    return new_ids


def format_dead(letters: Sequence[DeadLetter]) -> str:
    lines = [f"{'ID':<17} {'TARGET':<12} {'TYPE':<11} {'ATTEMPTS':>8}  ADDRESS  ERROR"]
    for letter in letters:
        f = letter.fields
        lines.append(
            f"{letter.id:<17} {f.get('target', '') or '-':<12} {f.get('type', ''):<11} "
            f"{f.get('attempts', ''):>8}  {f.get('address', '')}  {f.get('error', '')}"
        )
    return "\n".join(lines)


def as_json(letters: Sequence[DeadLetter]) -> str:
    return json.dumps([dataclasses.asdict(x) for x in letters], indent=2, sort_keys=True)


# --- command line -----------------------------------------------------------------------------------


def connect(settings: config.Settings) -> store.Store:
    """The store's connection (embedded server, single server or cluster), with a socket timeout that
    outlasts XREADGROUP's block of `notify.poll` seconds."""
    timeout = max(settings.redis.socket_timeout, settings.notify.poll + 5)
    return store.connect(
        dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, socket_timeout=timeout))
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="notify_command")
    dead = sub.add_parser("dead-letters", help="list or replay notifications that could not be delivered")
    dead.add_argument("action", choices=("list", "replay"))
    dead.add_argument("ids", nargs="*", help="dead-letter ids to replay")
    dead.add_argument("--all", action="store_true", help="replay every dead letter")
    dead.add_argument("--limit", type=int, default=1000, help="list at most this many (default 1000)")
    dead.add_argument("--json", action="store_true", help="list as JSON")


def command(args: argparse.Namespace, settings: config.Settings) -> int:
    """`bouncekeeper notify` (the worker) and `bouncekeeper notify dead-letters list|replay`."""
    connection = connect(settings)
    outbox = Outbox(connection)
    out = sys.stdout
    if args.notify_command == "dead-letters":
        if args.action == "list":
            letters = list_dead(outbox, count=args.limit)
            out.write((as_json(letters) if args.json else format_dead(letters)) + "\n")
            return 0
        if not args.all and not args.ids:
            sys.stderr.write("bouncekeeper: name the dead letters to replay, or --all\n")
            return 64  # EX_USAGE
        new = replay(outbox, None if args.all else args.ids)
        out.write(f"replayed {len(new)} notification(s) into the outbox\n")
        return 0
    if not settings.notify.targets:
        raise config.ConfigError(settings.source, "notify.targets", "no targets: nothing to deliver to")
    notifier = Notifier.from_settings(connection, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    try:
        notifier.run(stop)
    finally:
        connection.close()
    return 0
