"""`bouncekeeper report [--since 7d] [--json]`: what happened, and what `enforce` would do or did.

One function, `build`, reads the store (the event stream from `since` on, the tracked addresses, the open
breakers, the notifier's outbox) and returns plain data; the command prints it and the admin page draws its
charts from the same data (httpd.py, charts.py), so the page and the report cannot disagree. docs/report.md
explains each figure and how to read them before moving from observe to enforce.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bouncekeeper import config
from bouncekeeper.core.addresses import domain_of
from bouncekeeper.core.scoring import Mode, Rule, Rules, State

if TYPE_CHECKING:
    from bouncekeeper.service.bounces import Service
    from bouncekeeper.store import Store

FAILURES = ("permanent", "temporary", "unknown")  # the kinds that are a failed delivery
TOP = 20  # rows of each "by" table; the rest is summed as "(other)"
LISTED = 100  # addresses listed by name in each group
OTHER = "(other)"
MAX_SINCE = 90 * 86_400  # the admin page's longest window (the stream holds about stream_size events)
_SINCE = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_since(text: str) -> int:
    """`7d`, `12h`, `30m`, `2w` or `90s` as seconds."""
    match = _SINCE.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 7d, 12h, 30m)")
    return int(match.group(1)) * _UNIT[match.group(2)]


def _day(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).date().isoformat()


def _top(counter: Counter[str], n: int = TOP) -> dict[str, int]:
    """The n largest, then the rest as one "(other)" row; ties in name order, so the output is stable."""
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:n])
    rest = sum(v for _, v in ranked[n:])
    if rest:
        out[OTHER] = rest
    return out


def _days(start: float, now: float) -> list[str]:
    first = datetime.datetime.fromtimestamp(start, datetime.UTC).date()
    last = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    return [(first + datetime.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def tally_events(events: Iterable[dict[str, Any]], start: float, now: float) -> dict[str, Any]:
    """The stream's part of the report: counts by kind, reason, domain, source and day."""
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    unvouched_recipients = 0
    crossed: dict[str, list[str]] = {"threshold": [], "disabled_by_bounces": [], "disabled_other": []}
    breakers: list[dict[str, Any]] = []
    for e in events:
        at = float(e.get("at") or 0)
        if at < start or at > now:
            continue
        kind = str(e.get("kind") or "")
        kinds[kind] += 1
        address = str(e.get("address") or "")
        if kind in FAILURES:
            reasons[str(e.get("reason") or "unknown")] += 1
            domains[domain_of(address) if address else "(none)"] += 1
            sources[str(e.get("source") or "")] += 1
            per_day[_day(at)][kind] += 1
        elif kind == "unvouched":
            unvouched_recipients += len(str(e.get("recipients") or "").split())
        elif kind == "threshold":
            crossed["threshold"].append(address)
        elif kind == "disabled":
            # A bounce's disabling carries the bounce's id; an operator's act or an import does not.
            crossed["disabled_by_bounces" if e.get("id") else "disabled_other"].append(address)
        elif kind == "breaker":
            breakers.append(
                {"domain": domain_of(address) if address else "", "date": e.get("date") or _iso(at)}
            )
    return {
        "events_by_kind": dict(sorted(kinds.items())),
        "bounces": {
            "total": sum(kinds[k] for k in FAILURES),
            "by_kind": {k: kinds[k] for k in FAILURES},
            "by_reason": _top(reasons),
            "by_domain": _top(domains),
            "by_source": _top(sources),
            "per_day": [{"day": day, **{k: per_day[day][k] for k in FAILURES}} for day in _days(start, now)],
        },
        "forged": kinds["forged"],
        "loops": kinds["loop"],
        "unvouched": {"messages": kinds["unvouched"], "recipients": unvouched_recipients},
        "crossed": {name: sorted(set(v))[:LISTED] for name, v in crossed.items()}
        | {f"{name}_count": len(set(v)) for name, v in crossed.items()},
        "breakers_opened": breakers[-LISTED:],
    }


def _iso(at: float) -> str:
    return (
        datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def address_standing(store: Store, rules: Rules) -> dict[str, Any]:
    """Tracked addresses now: at or near the threshold (one hard point or one soft failure short)."""
    at: list[dict[str, Any]] = []
    near: list[dict[str, Any]] = []
    states: Counter[str] = Counter()
    for view in store.views(sorted(store.addresses())):
        if not view.tracked:
            continue
        states[view.state.value] += 1
        if view.state is not State.ACTIVE:
            continue
        score = view.hard_score if rules.rule is Rule.DAILY else view.hits
        row = {"address": view.address, "hard_score": score, "soft_count": view.soft_count}
        if score >= rules.threshold:
            at.append(row)
        elif score >= rules.threshold - 1 or view.soft_count >= rules.soft_threshold - 1:
            near.append(row)
    return {
        "states": dict(sorted(states.items())),
        "at_threshold_active": at[:LISTED],
        "at_threshold_active_count": len(at),
        "near_threshold": near[:LISTED],
        "near_threshold_count": len(near),
    }


def build(service: Service, *, since: int, now: float) -> dict[str, Any]:
    """The whole report for the `since` seconds before `now`: the one function the command and the
    admin page's charts use."""
    from bouncekeeper.store import Outbox  # noqa: PLC0415 - store is imported for types only above

    store, rules = service.store, service.rules
    start = now - since
    data: dict[str, Any] = {
        "window": {"since": _iso(start), "until": _iso(now), "seconds": since},
        "mode": rules.mode.value,
        "rule": rules.rule.value,
        "hard_threshold": rules.threshold,
        "soft_threshold": rules.soft_threshold,
    }
    data |= tally_events(store.events_since(start), start, now)
    data["addresses"] = address_standing(store, rules)
    data["open_breakers"] = sorted(store.frozen_domains())
    depth = Outbox(store).depth()
    data["notifier"] = {"backlog": depth["outbox"], "dead_letters": depth["dead"]}
    data["enforce"] = _verdict(data, rules)
    return data


def _verdict(data: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """What `enforce` would do (observe mode) or did (enforce mode), in the report's own numbers."""
    crossed = data["crossed"]
    standing = data["addresses"]
    if rules.mode is Mode.OBSERVE:
        return {
            "mode": "observe",
            "would_disable": standing["at_threshold_active_count"],
            "reached_threshold_in_window": crossed["threshold_count"],
            "text": (
                f"observe mode: {standing['at_threshold_active_count']} active addresses are at the threshold"
                f" now; enforce would disable them ({crossed['threshold_count']} reached it in this window)"
            ),
        }
    return {
        "mode": "enforce",
        "disabled_by_bounces": crossed["disabled_by_bounces_count"],
        "text": (
            f"enforce mode: {crossed['disabled_by_bounces_count']} addresses disabled by bounces"
            " in this window"
        ),
    }


def render_text(data: dict[str, Any]) -> str:
    b = data["bounces"]
    lines = [
        f"report {data['window']['since']} .. {data['window']['until']}"
        f"  mode={data['mode']} rule={data['rule']} threshold={data['hard_threshold']}",
        data["enforce"]["text"],
        f"bounces: {b['total']}  " + " ".join(f"{k}={v}" for k, v in b["by_kind"].items()),
    ]
    for title, table in (
        ("by reason", b["by_reason"]),
        ("by domain", b["by_domain"]),
        ("by source", b["by_source"]),
    ):
        lines.append(f"{title}:")
        lines += [f"  {name:<32} {n:>8}" for name, n in table.items()] or ["  -"]
    lines.append("per day: " + ", ".join(f"{d['day']}={sum(d[k] for k in FAILURES)}" for d in b["per_day"]))
    lines.append(
        f"forged: {data['forged']}  loops: {data['loops']}"
        f"  unvouched: {data['unvouched']['messages']} messages"
        f" naming {data['unvouched']['recipients']} addresses"
    )
    a = data["addresses"]
    lines.append("tracked addresses: " + (" ".join(f"{k}={v}" for k, v in a["states"].items()) or "none"))
    lines.append(f"active at the threshold: {a['at_threshold_active_count']}")
    lines += [
        f"  {r['address']} hard={r['hard_score']} soft={r['soft_count']}" for r in a["at_threshold_active"]
    ]
    lines.append(f"near the threshold: {a['near_threshold_count']}")
    lines += [f"  {r['address']} hard={r['hard_score']} soft={r['soft_count']}" for r in a["near_threshold"]]
    c = data["crossed"]
    lines.append(
        f"in this window: reached the threshold {c['threshold_count']}, disabled by bounces"
        f" {c['disabled_by_bounces_count']}, disabled otherwise (admin, user, import)"
        f" {c['disabled_other_count']}"
    )
    lines.append("open breakers: " + (", ".join(data["open_breakers"]) or "none"))
    lines.append(
        f"notifier: backlog {data['notifier']['backlog']}, dead letters {data['notifier']['dead_letters']}"
    )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", default="7d", help="how far back: 7d (default), 12h, 30m, 2w")
    p.add_argument("--json", action="store_true", help="print JSON")


def command(args: argparse.Namespace, settings: config.Settings) -> int:
    from bouncekeeper.service import admin  # noqa: PLC0415 - it imports the store

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"bouncekeeper: --since: {exc}", file=sys.stderr)
        return admin.EX_USAGE

    def report(a: argparse.Namespace, service: Service) -> int:
        data = build(service, since=since, now=time.time())
        print(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) if a.json else render_text(data))
        return 0

    return admin.run(report, args, settings)
