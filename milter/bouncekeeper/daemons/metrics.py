"""A tiny Prometheus metric registry: counters, gauges and histograms with labels, text exposition.

One process-wide `REGISTRY` that the milter, the LMTP listener, the HTTP API and the notifier all
increment; whichever of them serves `/metrics` renders it. No dependency on prometheus_client: the text
format (version 0.0.4) is a page of rules, and we need four metric families, not a framework.

Gauges that are cheap to read but live elsewhere (the outbox depth in Redis) are registered as
collectors, called on each scrape.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotations: metrics must stay importable by everything
    from http.server import ThreadingHTTPServer

    from bouncekeeper.log import QueueIdAdapter
    from bouncekeeper.service.bounces import Outcome

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds; a Redis round trip on loopback is ~0.1 ms, an outage hits the 2 s socket timeout.
DEFAULT_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    # Exposition format: label values escape backslash, double quote and line feed.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = lock

    def _key(self, labels: Sequence[str]) -> LabelValues:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        return tuple(str(v) for v in labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock) -> None:
        super().__init__(name, help_text, labels, lock)
        self._values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def labels(self, *labels: str) -> BoundCounter:
        """The counter for these label values, checked once: for hot paths (one lock, one dict update)."""
        return BoundCounter(self, self._key(labels))

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class BoundCounter:
    __slots__ = ("_key", "_lock", "_values")

    def __init__(self, counter: Counter, key: LabelValues) -> None:
        self._values = counter._values  # the same dict and lock as the counter
        self._lock = counter._lock
        self._key = key

    def inc(self) -> None:
        # Locked: `d[k] = d.get(k) + 1` is not atomic across threads (pymilter runs one per connection).
        with self._lock:
            self._values[self._key] = self._values.get(self._key, 0.0) + 1.0


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock) -> None:
        super().__init__(name, help_text, labels, lock)
        self._values: dict[LabelValues, float] = {}
        self._collector: Callable[[], Iterable[tuple[LabelValues, float]]] | None = None

    def set(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def collect_with(self, collector: Callable[[], Iterable[tuple[LabelValues, float]]]) -> None:
        """Read the value(s) at scrape time instead of storing them (e.g. XLEN of the outbox)."""
        self._collector = collector

    def samples(self) -> list[str]:
        with self._lock:
            items = dict(self._values)
        if self._collector is not None:
            items.update({self._key(k): v for k, v in self._collector()})
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(items.items())]


class Collected(_Metric):
    """A counter or gauge whose values another process keeps (in Redis): read on each scrape."""

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock, kind: str = "counter"
    ) -> None:
        super().__init__(name, help_text, labels, lock)
        self.kind = kind
        self._collector: Callable[[], Iterable[tuple[LabelValues, float]]] | None = None

    def collect_with(self, collector: Callable[[], Iterable[tuple[LabelValues, float]]]) -> None:
        self._collector = collector

    def samples(self) -> list[str]:
        items = {self._key(k): v for k, v in self._collector()} if self._collector else {}
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(items.items())]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str],
        lock: threading.Lock,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels, lock)
        self.buckets = (*sorted(buckets), math.inf)
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * len(self.buckets))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, *labels: str) -> int:
        with self._lock:
            counts = self._counts.get(self._key(labels))
            return counts[-1] if counts else 0

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(c), self._sums[k]) for k, c in self._counts.items())
        lines: list[str] = []
        for key, counts, total in items:
            for bound, count in zip(self.buckets, counts, strict=True):
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {count}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {counts[-1]}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        metric = Counter(name, help_text, labels, self._lock)
        self._add(metric)
        return metric

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        metric = Gauge(name, help_text, labels, self._lock)
        self._add(metric)
        return metric

    def collected(
        self, name: str, help_text: str, labels: Sequence[str] = (), kind: str = "counter"
    ) -> Collected:
        metric = Collected(name, help_text, labels, self._lock, kind)
        self._add(metric)
        return metric

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        metric = Histogram(name, help_text, labels, self._lock, buckets)
        self._add(metric)
        return metric

    def render(self) -> str:
        """The Prometheus text exposition of every metric (families without samples keep HELP/TYPE)."""
        lines: list[str] = []
        for metric in list(self._metrics.values()):
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


REGISTRY = Registry()

# The shared metric families. Adapters increment these; nothing else defines bouncekeeper_* names.
BOUNCES = REGISTRY.counter(
    "bouncekeeper_bounces_total",
    "Failed recipients recorded, by kind and reason.",
    ("source", "kind", "reason"),
)
DECISIONS = REGISTRY.counter(
    "bouncekeeper_decisions_total",
    "Per-message decisions of the adapters (recorded, not_bounce, tempfail, forged, loop ...).",
    ("source", "decision"),
)
STORE_LATENCY = REGISTRY.histogram(
    "bouncekeeper_store_seconds", "Latency of store operations, in seconds.", ("operation",)
)
# Kept in Redis by the notifier (another process), read at scrape time by whoever serves /metrics.
NOTIFICATIONS = REGISTRY.collected(
    "bouncekeeper_notifications_total",
    "Webhook delivery attempts by target and result (delivered, retry, dead), from the notifier.",
    ("target", "result"),
)
OUTBOX_DEPTH = REGISTRY.gauge(
    "bouncekeeper_outbox_depth",
    "Notifications waiting in the outbox (stream) and the dead-letter stream.",
    ("stream",),
)
# A store call that raised (StoreUnavailable: the bounce was answered 451 and will come again).
STORE_ERRORS = REGISTRY.counter(
    "bouncekeeper_store_errors_total", "Store operations that failed, by operation.", ("operation",)
)
# The circuit breakers opened so far (the store's stats hash, every process's), read at scrape time.
BREAKERS_OPENED = REGISTRY.collected(
    "bouncekeeper_breakers_opened_total",
    "Per-domain circuit breakers opened (too many addresses of one domain failing at once).",
)
LIMITED = REGISTRY.counter(
    "bouncekeeper_limited_total",
    "Connections, commands and recipients cut by a bound against hostile clients, by listener and limit.",
    ("listener", "limit"),
)
HTTP_REQUESTS = REGISTRY.counter(
    "bouncekeeper_http_requests_total", "HTTP API requests by route and status code.", ("route", "code")
)
# httpserver.py: the API ("http") and the daemons' /metrics ("metrics"); what they cut is in LIMITED.
HTTP_CONNECTIONS = REGISTRY.gauge(
    "bouncekeeper_http_connections", "Open HTTP connections (at most max_connections).", ("server",)
)
HTTP_AUTH_FAILURES = REGISTRY.counter(
    "bouncekeeper_http_auth_failures_total",
    "Failed authentications: a wrong admin login (login), a wrong bearer token (bearer), a login refused "
    "while its client is throttled (throttled).",
    ("kind",),
)


# What the milter and the LMTP listener decide, besides observe()'s per-bounce results (recorded,
# forged, and the message types: delay, autoreply, feedback, delivered, unrecognised). A fixed set:
# Prometheus keeps one series per label value.
ADAPTER_DECISIONS = (
    "accept",  # the message (milter) or the recipient's bounce (LMTP) is accepted
    "discard",  # the milter dropped the message after recording it (bounce, loop)
    "tempfail",  # 451 4.3.0: store unavailable or internal error
    "reject",  # a 5xx: forged VERP in enforce mode, suppressed recipient, not a bounce address, too big
    "verp-rewrite",  # the milter gave outbound mail its signed VERP sender
    "verp-skipped",  # outbound mail left with its own sender (the store could not register a token)
    "split",  # 452 4.5.3 to a further recipient in `multi_recipient = "split"` mode
    "loop",  # an automatic message to a protected address (then discarded, rejected or tagged)
    "filter",  # the policy service sent the message through the after-queue listener (routed set-up)
    "suppressed",  # an outbound recipient disabled by bounces (then rejected or just marked)
)


# The bounds a listener enforces against hostile clients: a fixed set, as for decisions.
LIMITS = (
    "connections",  # a connection over the listener's max_connections, answered 421 and closed
    "idle",  # a session idle for its timeout, closed
    "session",  # a session open for its whole-session deadline, closed
    "command-line",  # a command line over the limit, answered 500 (never buffered whole)
    "request-size",  # a policy request over its size limit, connection closed
    "recipients",  # a recipient beyond max_recipients, answered 452 4.5.3
    "bad-address",  # a recipient with control, bidi or undecodable characters, answered 550 5.1.3
    "forged-session",  # the session closed (421) after repeated forged bounce addresses
    "forged-client",  # a bounce address deferred (421) because its client forged too many lately
    "classification",  # a message classified only up to the classifier's work caps (core/limits.py)
)


# The bounds of the HTTP servers (httpserver.py), listener "http" (the API) or "metrics".
HTTP_LIMITS = (
    "connections",  # a connection over max_connections while every other is busy: 503, closed
    "evicted",  # the longest-waiting idle or slow connection, closed to make room for a new one
    "idle",  # no request started within idle_timeout (a new or a kept-alive connection), closed
    "header-time",  # a request's headers not complete within header_timeout: 408, closed
    "request-time",  # its body not complete within request_timeout: 408, closed
    "write-time",  # the client did not take the answer within request_timeout, closed
    "header-size",  # request line and headers over 32 KiB: 431, closed
)


def limited(listener: str) -> dict[str, BoundCounter]:
    """LIMITED for one listener, its label values checked once."""
    return {name: LIMITED.labels(listener, name) for name in LIMITS}


def decisions(source: str) -> dict[str, BoundCounter]:
    """DECISIONS for one adapter, its label values checked once (hot paths call `.inc()` only)."""
    return {name: DECISIONS.labels(source, name) for name in ADAPTER_DECISIONS}


def bad_address(
    logger: QueueIdAdapter, limited: dict[str, BoundCounter], decided: dict[str, BoundCounter], address: str
) -> None:
    """A recipient refused for characters no address has (550 5.1.3), reported as every listener reports
    it: one rate-limited line (a stranger chooses how many), counted as cut and as a rejection."""
    logger.cut(
        "bad-address", "refused rcpt=%r: control, bidi or undecodable characters", address, level=logging.INFO
    )
    limited["bad-address"].inc()
    decided["reject"].inc()


@contextlib.contextmanager
def timed(operation: str, errors: tuple[type[Exception], ...] = (Exception,)) -> Iterator[None]:
    """Observe STORE_LATENCY for one store call, whether it succeeds or raises; count STORE_ERRORS when
    it raises one of `errors`."""
    start = time.perf_counter()
    try:
        yield
    except errors:
        STORE_ERRORS.inc(operation)
        raise
    finally:
        STORE_LATENCY.observe(time.perf_counter() - start, operation)


def observe(source: str, outcome: Outcome) -> None:
    """Count one processed message: call it from every adapter (milter, lmtp, http, imap) alike."""
    c = outcome.classification
    if outcome.forged:
        DECISIONS.inc(source, "forged")
        return
    DECISIONS.inc(source, "recorded" if c.is_bounce else c.message_type.value)
    for decision in outcome.recorded:
        if not decision.duplicate:
            BOUNCES.inc(source, decision.kind.value, decision.reason or "undefined")


# --- the /metrics endpoint of the milter and the LMTP listener ------------------------------------------


def listen_address(listen: str) -> tuple[str, int]:
    """ "HOST:PORT" or "[::1]:PORT" -> (host, port); the config checks the shape."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(listen: str, refresh: Callable[[], None] | None = None) -> ThreadingHTTPServer:
    """Serve `GET /metrics` (Prometheus text) at "HOST:PORT" from a daemon thread; 404 for anything else.

    For `bouncekeeper milter` and `bouncekeeper lmtp` (`metrics_listen`); `bouncekeeper http` serves the
    same registry behind its bearer token. This endpoint has NO authentication: bind it to loopback (or a
    monitoring-only address). `refresh` is called on each scrape to read values that live elsewhere (the
    outbox depth in Redis); if it fails, the scrape still serves this process's own counts. Connections
    and deadlines are bounded (httpserver.METRICS_LIMITS). Stop it with `.shutdown()` then
    `.server_close()`.
    """
    from bouncekeeper.daemons import httpserver  # noqa: PLC0415 -- here: httpserver imports this module

    return httpserver.serve_metrics(listen, refresh)
