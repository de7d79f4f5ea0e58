"""Server-rendered SVG charts for the admin page (httpd.py `GET /charts`): nothing is fetched at run time,
no script runs, so the page keeps its strict Content-Security-Policy.

Pure functions from `report.build`'s data (the numbers `bouncekeeper report --json` prints) to SVG text.
Every bar and dot carries its number in `data-*` attributes and a `<title>` (the browser's tooltip), so a
test reads the drawn numbers back and compares them with the report's. Every label is escaped: reasons,
domains and addresses come from bounces, which strangers write.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

# One colour per failure kind (colour-blind safe: the Okabe-Ito palette), and for the timeline's kinds.
COLOURS = {
    "permanent": "#D55E00",
    "temporary": "#E69F00",
    "unknown": "#999999",
    "delayed": "#56B4E9",
    "disabled": "#000000",
    "threshold": "#CC79A7",
    "enabled": "#009E73",
    "reset": "#0072B2",
}
BAR = "#0072B2"
WIDTH = 720
FONT = 'font-family="system-ui,sans-serif" font-size="11"'


def _svg(chart_id: str, title: str, height: int, body: list[str]) -> str:
    return (
        f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}"'
        f' height="{height}" viewBox="0 0 {WIDTH} {height}" {FONT}><title>{escape(title)}</title>'
        f"{''.join(body)}</svg>"
    )


def _nice_max(value: int) -> int:
    """The axis top: 1, 2 or 5 times a power of ten, at least `value` (and at least 1)."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def days_by_kind(per_day: Sequence[Mapping[str, Any]], kinds: Sequence[str]) -> str:
    """Stacked bars: failures per UTC day, one colour per kind."""
    height, left, top, bottom = 260, 40, 28, 40
    plot_h = height - top - bottom
    totals = [sum(int(d.get(k, 0)) for k in kinds) for d in per_day]
    ymax = _nice_max(max(totals, default=0))
    slot = (WIDTH - left - 10) / max(len(per_day), 1)
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{WIDTH - 10}" y2="{top + plot_h}" stroke="#888"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{ymax}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for n, kind in enumerate(kinds):  # the legend
        lx = left + n * 110
        body.append(f'<rect x="{lx}" y="4" width="10" height="10" fill="{COLOURS.get(kind, BAR)}"/>')
        body.append(f'<text x="{lx + 14}" y="13">{escape(kind)}</text>')
    label_every = max(1, len(per_day) // 10)
    for i, day in enumerate(per_day):
        x = left + i * slot + slot * 0.15
        y = float(top + plot_h)
        for kind in kinds:
            value = int(day.get(kind, 0))
            if not value:
                continue
            h = plot_h * value / ymax
            y -= h
            body.append(
                f'<rect class="bar" data-day="{escape(str(day["day"]))}" data-kind="{escape(kind)}"'
                f' data-value="{value}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}"'
                f' fill="{COLOURS.get(kind, BAR)}"><title>{escape(str(day["day"]))} {escape(kind)}: {value}'
                "</title></rect>"
            )
        if i % label_every == 0:
            body.append(
                f'<text x="{x + slot * 0.35:.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                f"{escape(str(day['day'])[5:])}</text>"
            )
    return _svg("chart-days", "Failures per day, by kind", height, body)


def ranking(chart_id: str, title: str, table: Mapping[str, int]) -> str:
    """Horizontal bars, largest first (the report's order), a label and the count on each."""
    row, label_w = 20, 220
    height = 10 + row * max(len(table), 1)
    top = max(table.values(), default=0) or 1
    body = []
    if not table:
        body.append('<text x="4" y="20">none in this window</text>')
    for i, (name, value) in enumerate(table.items()):
        y = 6 + i * row
        w = (WIDTH - label_w - 60) * value / top
        shown = name if len(name) <= 34 else name[:33] + "\u2026"
        body.append(
            f'<g class="row" data-label="{escape(name)}" data-value="{value}">'
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{escape(shown)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{row - 6}" fill="{BAR}">'
            f"<title>{escape(name)}: {value}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{value}</text></g>'
        )
    return _svg(chart_id, title, height, body)


def timeline(address: str, events: Sequence[Mapping[str, Any]]) -> str:
    """One address's events (its history, newest first as the store keeps it) on a time axis: a dot per
    event, coloured by kind, its date, kind, status and reason in the tooltip."""
    height, left, right = 120, 20, WIDTH - 20
    times = [float(e["at"]) for e in events if e.get("at") is not None]
    body = [f'<line x1="{left}" y1="60" x2="{right}" y2="60" stroke="#888"/>']
    if not times:
        body.append('<text x="20" y="40">no events</text>')
        return _svg("chart-timeline", f"Timeline of {address}", height, body)
    first, last = min(times), max(times)
    span = max(last - first, 1.0)
    for label, at in (("start", first), ("end", last)):
        x = left if label == "start" else right
        day = datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        anchor = "start" if label == "start" else "end"
        body.append(f'<text x="{x}" y="100" text-anchor="{anchor}">{day}</text>')
    for n, e in enumerate(
        sorted((e for e in events if e.get("at") is not None), key=lambda e: float(e["at"]))
    ):
        at = float(e["at"])
        cx = left + (right - left) * (at - first) / span
        kind = str(e.get("kind") or "")
        tip = " ".join(
            str(v) for v in (e.get("date") or "", kind, e.get("status") or "", e.get("reason") or "") if v
        )
        body.append(
            f'<circle class="event" data-kind="{escape(kind)}" data-at="{at:.0f}" cx="{cx:.1f}"'
            f' cy="{60 - 14 * (n % 3)}" r="6" fill="{COLOURS.get(kind, BAR)}"><title>{escape(tip)}</title>'
            "</circle>"
        )
    return _svg("chart-timeline", f"Timeline of {address}", height, body)
