"""What the HTTP side asks of the service and the store (`Backend`), and its answer on the real ones.

The API (http_api.py) and the admin page (http_admin.py) reach the service only through `Backend`: its
answers are JSON-ready, a store that cannot answer is `Unavailable` (503), a request the service refuses
is an `ApiError` (400). `ServiceBackend` is that port on `Service` and its `Store`, timing every store call
for /metrics. The store turns every Redis failure into `StoreUnavailable`: nothing here knows Redis.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import time
from collections.abc import Callable, Iterator, Mapping
from http import HTTPStatus
from typing import Any, Protocol

from bouncekeeper.core.scoring import State
from bouncekeeper.daemons import metrics
from bouncekeeper.log import get_logger
from bouncekeeper.service.bounces import Arrival, Outcome, Service
from bouncekeeper.store import Outbox, StoreUnavailable
from bouncekeeper.store.event import Event, EventKind, Source, iso
from bouncekeeper.store.keys import STATE as STATE_SUFFIX

log = get_logger("bouncekeeper.httpd")  # the daemon's name, as before the split: log filters use it


class Unavailable(Exception):
    """The store cannot answer now (the service's StoreUnavailable): 503, try again."""


class Backend(Protocol):
    """What the HTTP layer needs from the service and the store; answers are JSON-ready."""

    def submit_bounce(
        self, raw: bytes, *, envelope_rcpt: str | None, envelope_sender: str | None, client_addr: str | None
    ) -> dict[str, Any]: ...

    def submit_smtp_failure(
        self, address: str, code: int, status: str | None, text: str
    ) -> dict[str, Any]: ...

    def address(self, address: str) -> dict[str, Any] | None:
        """State, counters and history; None when the store knows nothing of the address."""

    def set_enabled(self, address: str, *, enabled: bool, note: str) -> dict[str, Any]:
        """Enable or disable (by an admin); returns {"address", "previous", "state"}."""

    def suppressions(self, *, after: str, limit: int) -> list[dict[str, Any]]:
        """Suppressed addresses in address order, those after `after`, at most `limit`."""

    def outbox_depth(self) -> dict[str, int]: ...

    def report(self, since: int) -> dict[str, Any]:
        """`bouncekeeper report --json`'s data for the last `since` seconds (report.build)."""

    def notification_counts(self) -> list[tuple[tuple[str, str], float]]:
        """((target, result), count) of the notifier's delivery attempts."""

    def open_session(self, digest: str, fingerprint: str, ttl: int) -> None: ...

    def session_fingerprint(self, digest: str) -> str | None:
        """What `open_session` stored under this digest, None once closed or expired."""

    def close_session(self, digest: str) -> None: ...


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


# --- the backend on the real service and store ------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Dataclasses, enums, tuples -> JSON-ready values (enum values are the stable strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    c = outcome.classification
    return {
        "summary": outcome.summary(),
        "message_type": c.message_type.value,
        "is_bounce": c.is_bounce,
        "forged": outcome.forged,
        "event_id": outcome.event_id,
        "failures": jsonable(c.failures),
        "recorded": jsonable(outcome.recorded),
    }


class ServiceBackend:
    """`Backend` on bouncekeeper.service.bounces.Service and its Store."""

    def __init__(self, service: Service, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.store = service.store
        self.clock = clock

    @contextlib.contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        """metrics.timed, counting only the store's own failure (an ApiError is the client's); the store
        down is the API's Unavailable."""
        try:
            with metrics.timed(operation, errors=(StoreUnavailable,)):
                yield
        except StoreUnavailable as exc:
            metrics.DECISIONS.inc("http", "tempfail")
            raise Unavailable(str(exc)) from exc

    def submit_bounce(
        self, raw: bytes, *, envelope_rcpt: str | None, envelope_sender: str | None, client_addr: str | None
    ) -> dict[str, Any]:
        with self._timed("process_bounce"):
            outcome = self.service.process_bounce(
                Arrival(
                    raw,
                    envelope_rcpt=envelope_rcpt,
                    envelope_sender=envelope_sender,
                    source=Source.HTTP,
                    client_addr=client_addr,
                )
            )
        metrics.observe("http", outcome)
        log.info("http: %s", outcome.summary())
        return outcome_json(outcome)

    def submit_smtp_failure(self, address: str, code: int, status: str | None, text: str) -> dict[str, Any]:
        with self._timed("record_smtp_failure"):
            try:
                outcome = self.service.record_smtp_failure(address, code, status, text)
            except ValueError as exc:
                raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", str(exc)) from exc
        metrics.observe("smtp-time", outcome)
        log.info("http: smtp-time %s", outcome.summary())
        return outcome_json(outcome)

    def address(self, address: str) -> dict[str, Any] | None:
        with self._timed("view"):
            view = self.store.view(address, events=self.store.settings.history_size)
        if not view.tracked:
            return None
        return dict(jsonable(view))

    def set_enabled(self, address: str, *, enabled: bool, note: str) -> dict[str, Any]:
        event = Event(
            at=self.clock(),
            kind=EventKind.ENABLED if enabled else EventKind.DISABLED,
            source=Source.HTTP,
            address=address,
            note=note or ("enabled" if enabled else "disabled") + " over the HTTP API",
        )
        with self._timed("admin"):
            before, after = self.store.admin(
                address,
                "enable" if enabled else "disable",
                event,
                state=None if enabled else State.DISABLED_ADMIN,
            )
        log.info("http: %s %s (was %s, now %s)", "enabled" if enabled else "disabled", address, before, after)
        return {"address": address, "previous": before.value, "state": after.value}

    def suppressions(self, *, after: str, limit: int) -> list[dict[str, Any]]:
        # Every address with a state hash is suppressed (enable deletes it). Sorted for stable paging by
        # address (keyset pagination: ?after=); one SCAN per page, fine for the thousands an admin pages.
        with self._timed("suppressions"):
            names = sorted(a for a in self.store.addresses((STATE_SUFFIX,)) if a > after)[:limit]
            views = [self.store.view(a, events=self.store.settings.history_size) for a in names]
        rows = []
        for view in views:
            if view.state is State.ACTIVE:
                continue
            last: dict[str, Any] = next((e for e in view.events if e.get("reason")), {})
            rows.append(
                {
                    "address": view.address,
                    "state": view.state.value,
                    "since": view.since,
                    "since_date": iso(view.since) if view.since else None,
                    "by": view.by,
                    "last_reason": last.get("reason"),
                    "last_status": last.get("status"),
                    "last_date": last.get("date"),
                }
            )
        return rows

    def notification_counts(self) -> list[tuple[tuple[str, str], float]]:
        with self._timed("notification_counts"):
            return Outbox(self.store).delivery_counts()

    def outbox_depth(self) -> dict[str, int]:
        with self._timed("outbox_depth"):
            return Outbox(self.store).depth()

    def report(self, since: int) -> dict[str, Any]:
        from bouncekeeper.service import report  # noqa: PLC0415 - only the charts page needs it

        with self._timed("report"):
            return report.build(self.service, since=since, now=self.clock())

    def open_session(self, digest: str, fingerprint: str, ttl: int) -> None:
        with self._timed("session"):
            self.store.put_session(digest, fingerprint, ttl)

    def session_fingerprint(self, digest: str) -> str | None:
        with self._timed("session"):
            return self.store.get_session(digest)

    def close_session(self, digest: str) -> None:
        with self._timed("session"):
            self.store.drop_session(digest)
