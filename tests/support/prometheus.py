"""Read a Prometheus text exposition (format 0.0.4) back into samples, to compare two scrapes."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$")


def samples(text: str) -> dict[str, float]:
    """'name{labels}' -> value, for every sample line (HELP/TYPE comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        out[m.group(1)] = float(m.group(2))
    return out


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The samples that changed, by how much; histogram buckets and sums left out (timings vary)."""
    diff = {}
    for name, value in after.items():
        if "_bucket{" in name or "_sum{" in name:
            continue
        delta = value - before.get(name, 0.0)
        if delta:
            diff[name] = delta
    return diff


def scrape(url: str) -> tuple[int, str, str]:
    """GET url: (status, content type, body); an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"] or "", exc.read().decode(errors="replace")
