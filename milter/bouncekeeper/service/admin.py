"""The operator's commands: show, list, enable, disable, reset, stats, export, record, ingest.

Each takes the parsed arguments and a Service, prints for people (or JSON with --json), and returns an
exit status: 0, 1 for "not found / nothing to do", 2 for bad input, 75 (EX_TEMPFAIL) when Redis is
unreachable.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import mailbox
import pathlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from bouncekeeper import config
from bouncekeeper.core.addresses import domain_of, normalise
from bouncekeeper.core.scoring import Rule, State
from bouncekeeper.log import get_logger
from bouncekeeper.service.bounces import Arrival, Outcome, Service, Source
from bouncekeeper.store import StoreUnavailable
from bouncekeeper.store.event import Event, EventKind, iso
from bouncekeeper.store.model import AddressView

log = get_logger("bouncekeeper.admin")  # as before the folders: log filters use it

EX_TEMPFAIL = 75  # sysexits.h: try again later
EX_USAGE = 2
PROGRESS_MIN = 50  # inputs with fewer messages get no progress bar

Command = Callable[[argparse.Namespace, Service], int]


def define(name: str, p: argparse.ArgumentParser) -> Callable[[argparse.Namespace, config.Settings], int]:
    """Add the arguments of the operator subcommand `name` (cli.COMMANDS lists them with their help
    line, without importing this module, which imports the store); return its handler."""
    command = _COMMANDS[name]
    p.add_argument("--json", action="store_true", help="print JSON")
    if name in ("show", "enable", "disable", "reset", "record"):
        p.add_argument("address")
    if name == "show":
        p.add_argument("--events", type=int, default=10, metavar="N", help="events to show (default 10)")
    elif name == "list":
        p.add_argument("--state", choices=[s.value for s in State])
        p.add_argument("--domain", metavar="DOMAIN")
    elif name == "disable":
        p.add_argument("--by", choices=["admin", "user"], default="admin")
    elif name == "export":
        p.add_argument("--state", choices=[s.value for s in State if s is not State.ACTIVE], action="append")
    elif name == "record":
        p.add_argument("--code", type=int, required=True, help="the SMTP reply code, e.g. 550")
        p.add_argument("--status", help="the enhanced status code, e.g. 5.1.1")
        p.add_argument("--text", default="", help="the reply text")
        p.add_argument(
            "--message-id", help="the submitted message's Message-ID (recording it twice counts once)"
        )
    elif name == "ingest":
        p.add_argument("files", nargs="+", metavar="FILE")
        p.add_argument(
            "--rcpt", metavar="ENVELOPE_RCPT", help="the envelope recipient they were delivered to"
        )
    if name in ("enable", "disable", "reset"):
        p.add_argument("--note", default="", help="a note for the audit event")
    return lambda args, settings: run(command, args, settings)


def run(command: Command, args: argparse.Namespace, settings: config.Settings) -> int:
    try:
        service = Service.open(settings)
    except StoreUnavailable as exc:
        print(f"bouncekeeper: store unavailable: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    try:
        return command(args, service)
    except StoreUnavailable as exc:
        print(f"bouncekeeper: store unavailable: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        service.close()


def _address(text: str) -> str | None:
    address = normalise(text)
    if address is None:
        print(f"bouncekeeper: not an address: {text!r}", file=sys.stderr)
    return address


def _emit(args: argparse.Namespace, data: object, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True))
    else:
        print(text)


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def describe(view: AddressView, service: Service) -> dict[str, Any]:
    rules = service.rules
    hard_score = view.hard_score if rules.rule is Rule.DAILY else view.hits
    return {
        "address": view.address,
        "state": view.state.value,
        "since": iso(view.since) if view.since else None,
        "by": view.by,
        "mode": rules.mode.value,
        "rule": rules.rule.value,
        "hard_score": hard_score,
        "hard_threshold": rules.threshold,
        "hard_resets_in": view.hard_ttl if rules.rule is Rule.DAILY else view.hits_ttl,
        "hard_last_day": iso(view.hard_day * rules.day_length)[:10] if view.hard_day is not None else None,
        "soft_count": view.soft_count,
        "soft_threshold": rules.soft_threshold,
        "soft_resets_in": view.soft_ttl,
        "suppressed": view.state is not State.ACTIVE,
        "events": view.events,
    }


def show(args: argparse.Namespace, service: Service) -> int:
    address = _address(args.address)
    if address is None:
        return EX_USAGE
    data = describe(service.store.view(address, events=args.events), service)
    lines = [f"{address}  state={data['state']}"]
    if data["since"]:
        lines[0] += f" since {data['since']} by {data['by']}"
    hard_ttl = data["hard_resets_in"]
    lines.append(
        f"  hard score {data['hard_score']}/{data['hard_threshold']} "
        f"({data['rule']} rule, {data['mode']} mode), "
        + (f"resets in {_duration(hard_ttl)} unless it rises" if hard_ttl is not None else "no counter")
    )
    soft_ttl = data["soft_resets_in"]
    lines.append(
        f"  soft count {data['soft_count']}/{data['soft_threshold']}, "
        + (f"resets in {_duration(soft_ttl)}" if soft_ttl is not None else "no counter")
    )
    view_events: list[dict[str, Any]] = data["events"]
    lines.append(f"  last events ({len(view_events)}):" if view_events else "  no events")
    for e in view_events:
        bits = [e.get("date", "?"), e.get("kind", "?"), e.get("status") or "-", e.get("reason") or "-"]
        bits.append(f"source={e.get('source', '-')}")
        if "scored" in e:
            bits.append("scored" if e["scored"] else "not scored")
        if e.get("note"):
            bits.append(f"({e['note']})")
        if e.get("diagnostic"):
            bits.append(f"diag={e['diagnostic'][:80]!r}")
        if e.get("trimmed"):
            bits.append("(details trimmed from the stream)")
        if e.get("stream_unavailable"):
            bits.append("(details not read: the event stream is unreachable)")
        lines.append("    " + " ".join(str(b) for b in bits))
    _emit(args, data, "\n".join(lines))
    return 0


def _views(service: Service, state: str | None = None, domain: str | None = None) -> Iterator[AddressView]:
    wanted_domain = normalise(f"x@{domain}") if domain else None
    addresses = sorted(service.store.addresses())
    if wanted_domain:
        addresses = [a for a in addresses if domain_of(a) == domain_of(wanted_domain)]
    for view in service.store.views(addresses):
        if (state is None or view.state.value == state) and view.tracked:
            yield view


def list_addresses(args: argparse.Namespace, service: Service) -> int:
    rows = [describe(v, service) for v in _views(service, args.state, args.domain)]
    for row in rows:
        row.pop("events")
    text = "\n".join(
        f"{r['address']}\t{r['state']}\thard={r['hard_score']}/{r['hard_threshold']}"
        f"\tsoft={r['soft_count']}/{r['soft_threshold']}"
        for r in rows
    )
    _emit(args, rows, text or "no tracked addresses")
    return 0


def _admin(
    args: argparse.Namespace, service: Service, action: str, state: State | None, kind: EventKind
) -> int:
    address = _address(args.address)
    if address is None:
        return EX_USAGE
    by = getattr(args, "by", "admin")
    event = Event(
        at=service.clock(), kind=kind, source=Source.CLI, address=address, note=args.note or f"by {by}"
    )
    before, after = service.store.admin(address, action, event, state=state, by=by)
    log.info("%s %s by %s: %s -> %s (%s)", action, address, by, before.value, after.value, event.note)
    data = {"address": address, "action": action, "previous": before.value, "state": after.value}
    _emit(args, data, f"{address}: {action}: {before.value} -> {after.value}")
    return 0


def enable(args: argparse.Namespace, service: Service) -> int:
    return _admin(args, service, "enable", None, EventKind.ENABLED)


def disable(args: argparse.Namespace, service: Service) -> int:
    state = State.DISABLED_USER if args.by == "user" else State.DISABLED_ADMIN
    return _admin(args, service, "disable", state, EventKind.DISABLED)


def reset(args: argparse.Namespace, service: Service) -> int:
    return _admin(args, service, "reset", None, EventKind.RESET)


def stats(args: argparse.Namespace, service: Service) -> int:
    states: Counter[str] = Counter()
    tracked = 0
    for view in _views(service):
        tracked += 1
        states[view.state.value] += 1
    counters = service.store.counters()
    frozen = service.store.frozen_domains()
    data = {
        "tracked_addresses": tracked,
        "states": dict(states),
        "counters": counters,
        "frozen_domains": frozen,
        "mode": service.rules.mode.value,
        "rule": service.rules.rule.value,
    }
    lines = [f"tracked addresses: {tracked}"]
    lines += [f"  {state}: {n}" for state, n in sorted(states.items())]
    lines.append("counters:")
    lines += [f"  {key}: {n}" for key, n in sorted(counters.items())]
    lines.append("open circuit breakers: " + (", ".join(sorted(frozen)) or "none"))
    _emit(args, data, "\n".join(lines))
    return 0


def export(args: argparse.Namespace, service: Service) -> int:
    wanted = set(args.state or [s.value for s in State if s is not State.ACTIVE])
    rows = []
    for view in service.store.views(sorted(service.store.addresses(("state",)))):
        address = view.address
        if view.state.value in wanted:
            since = iso(view.since) if view.since else ""
            rows.append({"address": address, "state": view.state.value, "since": since, "by": view.by or ""})
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["address", "state", "since", "by"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    sys.stdout.write(out.getvalue())
    return 0


def _outcome(outcome: Outcome) -> dict[str, Any]:
    return {
        "summary": outcome.summary(),
        "message_type": outcome.classification.message_type.value,
        "forged": outcome.forged,
        "event_id": outcome.event_id,
        "recorded": [
            {
                "address": d.address,
                "kind": d.kind.value,
                "status": d.status,
                "reason": d.reason,
                "effect": d.effect.value,
                "scored": d.scored,
                "duplicate": d.duplicate,
                "state": d.state.value,
                "score": d.score,
                "threshold": d.threshold,
                "soft_count": d.soft_count,
                "disabled": d.disabled,
            }
            for d in outcome.recorded
        ],
        "unvouched": list(outcome.unvouched),
    }


def record(args: argparse.Namespace, service: Service) -> int:
    try:
        outcome = service.record_smtp_failure(
            args.address, args.code, args.status, args.text, message_id=args.message_id
        )
    except ValueError as exc:
        print(f"bouncekeeper: {exc}", file=sys.stderr)
        return EX_USAGE
    _emit(args, _outcome(outcome), outcome.summary())
    return 0


def messages(paths: list[str]) -> Iterator[tuple[str, bytes]]:
    """(name, raw bytes) of every message in these files, mbox files and maildirs."""
    for name in paths:
        path = pathlib.Path(name)
        if path.is_dir():
            if not all((path / sub).is_dir() for sub in ("cur", "new")):
                raise ValueError(f"{name}: a directory that is not a maildir (no cur/ and new/)")
            box = mailbox.Maildir(path, create=False)
            for key in sorted(box.keys()):
                yield f"{name}:{key}", box.get_bytes(key)
            continue
        with path.open("rb") as f:
            head = f.read(5)
        if head == b"From ":
            mbox = mailbox.mbox(path, create=False)
            for n, key in enumerate(mbox.keys()):
                yield f"{name}:{n}", mbox.get_bytes(key)
        else:
            yield name, path.read_bytes()


def count_messages(paths: list[str]) -> int:
    total = 0
    for name in paths:
        path = pathlib.Path(name)
        if path.is_dir():
            total += sum(1 for sub in ("cur", "new") for _ in (path / sub).iterdir())
        elif path.is_file() and path.read_bytes()[:5] == b"From ":
            total += len(mailbox.mbox(path, create=False))
        else:
            total += 1
    return total


class Progress:
    """A one-line progress bar on a terminal's stderr; silent otherwise or for small inputs."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.enabled = total >= PROGRESS_MIN and stream.isatty()
        self.done = 0

    def step(self) -> None:
        self.done += 1
        if self.enabled and (self.done == self.total or self.done % max(self.total // 200, 1) == 0):
            width = 40
            filled = width * self.done // self.total
            self.stream.write(f"\r[{'#' * filled}{' ' * (width - filled)}] {self.done}/{self.total}")
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()


def ingest(args: argparse.Namespace, service: Service) -> int:
    try:
        total = count_messages(args.files)
    except (OSError, ValueError) as exc:
        print(f"bouncekeeper: {exc}", file=sys.stderr)
        return EX_USAGE
    progress = Progress(total)
    tally: Counter[str] = Counter()
    results = []
    try:
        for name, raw in messages(args.files):
            outcome = service.process_bounce(
                Arrival(raw, envelope_rcpt=args.rcpt, envelope_sender=None, source=Source.CLI)
            )
            progress.step()
            tally["messages"] += 1
            tally[f"type:{outcome.classification.message_type.value}"] += 1
            tally["forged"] += outcome.forged
            # Named without an authentic VERP address (require_verp): in the stream only, never scored.
            tally["unvouched"] += len(outcome.unvouched)
            for d in outcome.recorded:
                tally["duplicates" if d.duplicate else f"recorded:{d.kind.value}"] += 1
                tally["scored"] += d.scored
                tally["disabled"] += d.disabled
            if args.json:
                results.append({"message": name, **_outcome(outcome)})
            else:
                print(f"{name}: {outcome.summary()}")
    except (OSError, ValueError) as exc:
        print(f"bouncekeeper: {exc}", file=sys.stderr)
        return EX_USAGE
    if args.json:
        print(json.dumps({"totals": dict(tally), "messages": results}, indent=2, ensure_ascii=False))
    else:
        print("totals: " + " ".join(f"{k}={v}" for k, v in sorted(tally.items())))
    return 0


_COMMANDS: dict[str, Command] = {
    "show": show,
    "list": list_addresses,
    "enable": enable,
    "disable": disable,
    "reset": reset,
    "stats": stats,
    "export": export,
    "record": record,
    "ingest": ingest,
}
