"""`bouncekeeper http`: the HTTP API, Prometheus metrics and a small admin page.

Why the stdlib `ThreadingHTTPServer` and no framework: the work behind each request is a synchronous
Redis call through the same `Service` the milter uses (redis-py, blocking), the traffic is an
application's API calls and an operator's browser, and the routes fit on a page. A thread per request
needs no async Redis client and no dependency; an asyncio server would have to push every store call
into a thread pool anyway.

Security model:
- The JSON API and /metrics take `Authorization: Bearer <token>` only (the token file of `[http]`),
  compared in constant time. A browser never sends that header by itself, so the API cannot be the
  target of a cross-site request forgery.
- The admin page at / logs in with the same token through a form, which sets a session cookie
  (`HttpOnly; SameSite=Strict`, and `Secure` with `secure_cookie`): 256 random bits, kept in Redis by
  their SHA-256 with an HMAC under the token (so logging out ends the session, and changing the token
  ends them all). Each state-changing form (logout included) carries a CSRF token, an HMAC of the
  session under the token, and its Origin (when the browser sends one) must be this server. The cookie
  is never accepted by the JSON API. Failed logins are logged, and LOGIN_FAILURES of them within
  LOGIN_WINDOW lock the client out for the rest of the window (429).
- Nothing is read of a body before the request is authenticated and its route known: a 401, 404 or
  405 closes the connection instead. Bodies larger than `max_body` are refused with 413 before they are
  read; a chunked body gets 411 and the connection is closed (its chunks are never taken for a request).
  Every error is JSON (or a plain page for the browser) with a short code and a sentence, never a 500
  for what a client sent.
- Connections, deadlines and header sizes are bounded by httpserver.py (`max_connections`, the
  timeouts of `[http]`).

Routes: see `openapi()` (served at /openapi.json).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import hashlib
import hmac
import html
import json
import re
import secrets
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

from bouncekeeper import config
from bouncekeeper.core import throttle
from bouncekeeper.core.addresses import normalise
from bouncekeeper.core.scoring import State
from bouncekeeper.daemons import httpserver, metrics
from bouncekeeper.log import get_logger
from bouncekeeper.service.bounces import Outcome, Service
from bouncekeeper.store import Outbox, StoreUnavailable
from bouncekeeper.store.event import Event, EventKind, Source, iso
from bouncekeeper.store.keys import STATE as STATE_SUFFIX

log = get_logger("bouncekeeper.httpd")  # as before the folders: log filters use it

API_VERSION = "1"  # the routes and their JSON; raised when a change breaks a client
SESSION_COOKIE = "bk_session"
SESSION_SECONDS = 8 * 3600
SESSION_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
COOKIE_ATTRIBUTES = "Path=/; HttpOnly; SameSite=Strict"
MAX_FORM = 8 * 1024  # the login, logout and re-enable forms are tiny
# Failed admin logins: this many within LOGIN_WINDOW seconds lock the client (an IPv4 address or an
# IPv6 /64) out for the rest of the window; at most THROTTLED_CLIENTS are remembered (oldest forgotten).
LOGIN_FAILURES = 5
LOGIN_WINDOW = 900.0
THROTTLED_CLIENTS = 4096
# JSON integers (an SMTP code): a 5,000-digit one costs quadratic time to convert, then a ValueError.
MAX_JSON_DIGITS = 20


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
        start = time.perf_counter()
        try:
            yield
        except StoreUnavailable as exc:
            metrics.DECISIONS.inc("http", "tempfail")
            metrics.STORE_ERRORS.inc(operation)
            raise Unavailable(str(exc)) from exc
        finally:
            metrics.STORE_LATENCY.observe(time.perf_counter() - start, operation)

    def submit_bounce(
        self, raw: bytes, *, envelope_rcpt: str | None, envelope_sender: str | None, client_addr: str | None
    ) -> dict[str, Any]:
        with self._timed("process_bounce"):
            outcome = self.service.process_bounce(
                raw,
                envelope_rcpt=envelope_rcpt,
                envelope_sender=envelope_sender,
                source=Source.HTTP,
                client_addr=client_addr,
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


# --- sessions and CSRF ------------------------------------------------------------------------------


def _mac(token: bytes, purpose: str, value: str) -> str:
    return hmac.new(token, f"{purpose}|{value}".encode(), hashlib.sha256).hexdigest()


def session_digest(session: str) -> str:
    # Redis holds the digest, not the cookie: a copy of the database does not log anyone in.
    return hashlib.sha256(session.encode()).hexdigest()


def session_fingerprint(token: bytes, session: str) -> str:
    return _mac(token, "session", session)


def csrf_token(token: bytes, session: str) -> str:
    return _mac(token, "csrf", session)


def same_secret(given: str, expected: str) -> bool:
    """Constant time, and for any text a client sends (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


# --- routing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str  # the template, for metrics and OpenAPI
    handler: str  # method name on the request handler
    auth: str  # "bearer", "session", "none"


def _route(method: str, template: str, handler: str, auth: str = "bearer") -> Route:
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$"
    return Route(method, re.compile(regex), template, handler, auth)


ROUTES = (
    _route("GET", "/", "page_admin", "none"),
    _route("POST", "/login", "page_login", "none"),
    _route("POST", "/logout", "page_logout", "none"),
    _route("POST", "/admin/enable", "page_enable", "session"),
    _route("GET", "/charts", "page_charts", "none"),
    _route("GET", "/openapi.json", "get_openapi", "none"),
    _route("GET", "/metrics", "get_metrics"),
    _route("POST", "/bounces", "post_bounce"),
    _route("POST", "/smtp-failures", "post_smtp_failure"),
    _route("GET", "/suppressions", "get_suppressions"),
    _route("GET", "/addresses/{address}", "get_address"),
    _route("POST", "/addresses/{address}/enable", "post_enable"),
    _route("POST", "/addresses/{address}/disable", "post_disable"),
)


class App:
    """Everything a request handler needs; one per server."""

    def __init__(
        self,
        backend: Backend,
        token: bytes,
        settings: config.HttpSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.token = token
        self.settings = settings
        self.clock = clock
        # Failed logins per client: the same bounded table and fixed window as forged bounce addresses.
        self.logins = throttle.ForgeryLimit(
            per_client=LOGIN_FAILURES, window=LOGIN_WINDOW, max_clients=THROTTLED_CLIENTS
        )


class Handler(httpserver.BoundedHandler):
    app: App  # set on the subclass made by `make_server`
    authenticated = False  # this request's: its body may be read as an accepted request

    # --- plumbing -----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def unsupported_method(self) -> None:
        self._dispatch(self.command)  # 405 naming the allowed methods, or 404

    def keep_alive(self) -> bool:
        # A kept-alive connection holds its thread while idle: only for a client that proved who it is
        # (the others connect again, and wait in httpserver's room without a thread meanwhile).
        return self.authenticated

    def _dispatch(self, method: str) -> None:
        parts = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        route_name = "unknown"
        status = HTTPStatus.INTERNAL_SERVER_ERROR
        self.authenticated = False
        try:
            allowed = []
            match = None
            route = None
            for candidate in ROUTES:
                m = candidate.pattern.match(parts.path)
                if m:
                    allowed.append(candidate.method)
                    if candidate.method == method:
                        route, match = candidate, m
            if route is None or match is None:
                if allowed:
                    raise ApiError(
                        HTTPStatus.METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        f"{method} is not allowed on {parts.path}; use {', '.join(allowed)}",
                        {"Allow": ", ".join(allowed)},
                    )
                raise ApiError(HTTPStatus.NOT_FOUND, "not_found", f"no such endpoint: {parts.path}")
            route_name = route.name
            if route.auth == "bearer":
                self._require_bearer()
                self.authenticated = True
            params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            status = getattr(self, route.handler)(**params)
        except ApiError as exc:
            status = exc.status
            self._send_json(exc.status, {"error": exc.code, "message": exc.message}, exc.headers)
        except Unavailable as exc:
            status = HTTPStatus.SERVICE_UNAVAILABLE
            log.warning("http: store unavailable: %s", exc)
            self._send_json(
                status,
                {"error": "store_unavailable", "message": "the bounce store is unavailable; try again later"},
                {"Retry-After": "30"},
            )
        except (httpserver.Cut, ConnectionError):
            raise  # the connection is cut or gone: nothing to answer (the server counts and logs)
        except Exception:  # The last line of defence of a daemon: log with traceback, answer 500.
            log.exception("http: %s %s failed", method, parts.path)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            self._send_json(status, {"error": "internal", "message": "internal error; see the server log"})
        metrics.HTTP_REQUESTS.inc(route_name, str(int(status)))

    def _require_bearer(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="bouncekeeper"'}
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(
                HTTPStatus.UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <token>", challenge
            )
        # Constant-time: the comparison must not tell an attacker how many leading bytes were right.
        if not hmac.compare_digest(given.strip().encode(), self.app.token):
            metrics.HTTP_AUTH_FAILURES.inc("bearer")
            log.debug("http: wrong bearer token from %s", self.client_address[0])
            raise ApiError(
                HTTPStatus.UNAUTHORIZED, "unauthorized", "the bearer token is not valid", challenge
            )

    def _content_length(self, limit: int) -> int:
        # Each refusal leaves the body unread, so the answer closes the connection (httpserver.py).
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(
                HTTPStatus.LENGTH_REQUIRED, "length_required", "send a Content-Length, not chunked"
            )
        given = self.headers.get_all("Content-Length") or ["0"]
        # ASCII digits only: str.isdigit() takes "²", which int() refuses. Two lengths that differ are
        # how requests are smuggled past a proxy that reads the other one.
        if len(set(given)) != 1 or not re.fullmatch(r"[0-9]{1,18}", given[0]):
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", "Content-Length is not one number")
        length = int(given[0])
        if length > limit:
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "too_large",
                f"the body has {length} bytes; the limit is {limit}",
            )
        return length

    def _body(self, limit: int | None = None) -> bytes:
        length = self._content_length(self.app.settings.max_body if limit is None else limit)
        return self.read_body(length, authenticated=self.authenticated)

    def _json_body(self, *, required: bool) -> dict[str, Any]:
        body = self._body()
        if not body.strip():
            if required:
                raise ApiError(HTTPStatus.BAD_REQUEST, "bad_json", "a JSON object body is required")
            return {}
        try:
            data = json.loads(body, parse_int=_json_int, parse_constant=_json_constant)
        except RecursionError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_json", "the JSON is nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, and ours
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_json", f"the body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_json", "the body must be a JSON object")
        return data

    def _form(self) -> dict[str, str]:
        body = self._body(MAX_FORM)
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_form", "the form is not UTF-8") from exc
        return dict(pairs)

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: HTTPStatus, data: object, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        self._send(status, body, "application/json; charset=utf-8", headers)

    def _address(self, raw: str) -> str:
        address = normalise(raw)
        if address is None:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_address", f"{raw!r} is not an email address")
        return address

    def _param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    # --- the JSON API -------------------------------------------------------------------------------

    def post_bounce(self) -> HTTPStatus:
        rcpt = self._param("rcpt") or self.headers.get("X-Envelope-To")
        sender = self._param("sender") or self.headers.get("X-Envelope-From")
        raw = self._body()
        if not raw.strip():
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "empty", "the body must be the raw bounce message (RFC 5322)"
            )
        outcome = self.app.backend.submit_bounce(
            raw,
            envelope_rcpt=rcpt or None,
            envelope_sender=sender or None,
            client_addr=self.client_address[0],
        )
        self._send_json(HTTPStatus.OK, outcome)
        return HTTPStatus.OK

    def post_smtp_failure(self) -> HTTPStatus:
        data = self._json_body(required=True)
        address = self._address(str(data.get("address", "")))
        code = data.get("code")
        if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_code", "code must be the SMTP reply code, 400..599")
        status = data.get("status")
        if status is not None and (
            not isinstance(status, str) or not re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", status)
        ):
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_status", "status must be an RFC 3463 code like 5.1.1")
        text = data.get("text", "")
        if not isinstance(text, str):
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_text", "text must be a string")
        self._send_json(HTTPStatus.OK, self.app.backend.submit_smtp_failure(address, code, status, text))
        return HTTPStatus.OK

    def get_address(self, address: str) -> HTTPStatus:
        normal = self._address(address)
        view = self.app.backend.address(normal)
        if view is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "unknown_address", f"nothing is recorded for {normal}")
        self._send_json(HTTPStatus.OK, view)
        return HTTPStatus.OK

    def _set(self, address: str, *, enabled: bool) -> HTTPStatus:
        data = self._json_body(required=False)
        note = data.get("note", "")
        if not isinstance(note, str):
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_note", "note must be a string")
        normal = self._address(address)
        if enabled and self.app.backend.address(normal) is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "unknown_address", f"nothing is recorded for {normal}")
        self._send_json(HTTPStatus.OK, self.app.backend.set_enabled(normal, enabled=enabled, note=note))
        return HTTPStatus.OK

    def post_enable(self, address: str) -> HTTPStatus:
        return self._set(address, enabled=True)

    def post_disable(self, address: str) -> HTTPStatus:
        return self._set(address, enabled=False)

    def get_suppressions(self) -> HTTPStatus:
        limit_raw = self._param("limit") or str(self.app.settings.page_size)
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 1000:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_limit", "limit must be a whole number from 1 to 1000")
        limit = int(limit_raw)
        after = self._param("after") or ""
        rows = self.app.backend.suppressions(after=after, limit=limit + 1)
        page = rows[:limit]
        body: dict[str, Any] = {"items": page, "next": None}
        if len(rows) > limit:
            body["next"] = f"/suppressions?limit={limit}&after={urllib.parse.quote(page[-1]['address'])}"
        self._send_json(HTTPStatus.OK, body)
        return HTTPStatus.OK

    def get_openapi(self) -> HTTPStatus:
        self._send_json(HTTPStatus.OK, openapi())
        return HTTPStatus.OK

    def get_metrics(self) -> HTTPStatus:
        try:
            for stream, depth in self.app.backend.outbox_depth().items():
                metrics.OUTBOX_DEPTH.set(depth, stream)
            counts = self.app.backend.notification_counts()
            metrics.NOTIFICATIONS.collect_with(lambda: counts)
        except Unavailable:
            pass  # the Redis-held values keep their last reading; the rest is still worth serving
        self._send(HTTPStatus.OK, metrics.REGISTRY.render().encode(), metrics.CONTENT_TYPE)
        return HTTPStatus.OK

    # --- the admin page -----------------------------------------------------------------------------

    def _session(self) -> str | None:
        """The request's live session: its cookie well formed, in Redis, and made under this token."""
        pairs = (part.strip().partition("=") for part in self.headers.get("Cookie", "").split(";"))
        candidates = [v for name, _, v in pairs if name == SESSION_COOKIE and SESSION_SHAPE.fullmatch(v)]
        for session in candidates[:2]:  # a stale cookie of another path may come first; no more than that
            stored = self.app.backend.session_fingerprint(session_digest(session))
            if stored is not None and same_secret(stored, session_fingerprint(self.app.token, session)):
                self.authenticated = True
                return session
        return None

    def _cookie(self, value: str, max_age: int) -> dict[str, str]:
        secure = "; Secure" if self.app.settings.secure_cookie else ""
        return {"Set-Cookie": f"{SESSION_COOKIE}={value}; {COOKIE_ATTRIBUTES}{secure}; Max-Age={max_age}"}

    def _same_origin(self) -> bool:
        # Browsers send Origin on every POST form submission; when present it must be us.
        origin = self.headers.get("Origin")
        if origin is None or origin == "null":
            return origin is None
        host = self.headers.get("Host", "")
        return urllib.parse.urlsplit(origin).netloc == host

    def _redirect(self, location: str, headers: Mapping[str, str] | None = None) -> HTTPStatus:
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": location, **(headers or {})})
        return HTTPStatus.SEE_OTHER

    def _page(self, status: HTTPStatus, title: str, content: str) -> HTTPStatus:
        self._send(
            status,
            render_page(title, content).encode(),
            "text/html; charset=utf-8",
            {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"},
        )
        return status

    def page_admin(self) -> HTTPStatus:
        session = self._session()
        if session is None:
            return self._page(HTTPStatus.OK, "Log in", LOGIN_FORM.format(message=""))
        after = self._param("after") or ""
        size = self.app.settings.page_size
        rows = self.app.backend.suppressions(after=after, limit=size + 1)
        notice = self._param("done") or ""
        return self._page(
            HTTPStatus.OK,
            "Disabled addresses",
            render_table(rows[:size], csrf_token(self.app.token, session), notice, more=len(rows) > size),
        )

    def page_charts(self) -> HTTPStatus:
        """The report as charts (charts.py): ?since=7d, and ?address=A for one address's timeline."""
        from bouncekeeper.service import report  # noqa: PLC0415 - only this page needs it

        if self._session() is None:
            return self._redirect("/")
        since_text = self._param("since") or "7d"
        try:
            since = report.parse_since(since_text)
        except ValueError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", str(exc)) from exc
        if since > report.MAX_SINCE:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", "since: at most 90 days")
        raw_address = self._param("address")
        address = self._address(raw_address) if raw_address else None
        data = self.app.backend.report(since)
        view = self.app.backend.address(address) if address else None
        return self._page(HTTPStatus.OK, "Report", render_charts(data, since_text, address, view))

    def page_login(self) -> HTTPStatus:
        if not self._same_origin():
            raise ApiError(
                HTTPStatus.FORBIDDEN, "cross_origin", "the login form must be posted from this site"
            )
        client = self.client_address[0]
        wait = self.app.logins.blocked_for(client, time.monotonic())
        if wait:
            metrics.HTTP_AUTH_FAILURES.inc("throttled")
            raise ApiError(
                HTTPStatus.TOO_MANY_REQUESTS,
                "throttled",
                f"too many failed logins; try again in {int(wait) + 1} s",
                {"Retry-After": str(int(wait) + 1)},
            )
        form = self._form()
        given = form.get("token", "").strip().encode()
        if not hmac.compare_digest(given, self.app.token):
            return self._failed_login(client)
        session = secrets.token_urlsafe(32)
        self.app.backend.open_session(
            session_digest(session), session_fingerprint(self.app.token, session), SESSION_SECONDS
        )
        log.info("http: admin logged in from %s", self.client_address[0])
        return self._redirect("/", self._cookie(session, SESSION_SECONDS))

    def _failed_login(self, client: str) -> HTTPStatus:
        metrics.HTTP_AUTH_FAILURES.inc("login")
        log.warning("http: failed admin login from %s", client)
        if self.app.logins.forged(client, time.monotonic()):  # counted; True from the last one allowed
            log.warning(
                "http: admin logins from %s refused for %.0f min after %d failures",
                throttle.client_key(client), LOGIN_WINDOW / 60, LOGIN_FAILURES,
            )  # fmt: skip
        return self._page(
            HTTPStatus.UNAUTHORIZED, "Log in", LOGIN_FORM.format(message='<p class="error">Wrong token.</p>')
        )

    def _checked_form(self) -> tuple[str, dict[str, str]]:
        """The session and form of a state-changing post: same origin and the session's CSRF token."""
        session = self._session()
        if session is None:
            raise ApiError(HTTPStatus.UNAUTHORIZED, "login_required", "log in first")
        form = self._form()
        csrf = csrf_token(self.app.token, session)
        if not self._same_origin() or not same_secret(form.get("csrf", ""), csrf):
            raise ApiError(HTTPStatus.FORBIDDEN, "csrf", "the form is stale or was not sent from this page")
        return session, form

    def page_logout(self) -> HTTPStatus:
        if self._session() is None:  # nothing to end; the browser forgets whatever it sent
            return self._redirect("/", self._cookie("", 0))
        session, _form = self._checked_form()
        self.app.backend.close_session(session_digest(session))
        log.info("http: admin logged out from %s", self.client_address[0])
        return self._redirect("/", self._cookie("", 0))

    def page_enable(self) -> HTTPStatus:
        _session, form = self._checked_form()
        address = self._address(form.get("address", ""))
        result = self.app.backend.set_enabled(address, enabled=True, note="admin page")
        log.info("http: %s re-enabled on the admin page (was %s)", address, result.get("previous"))
        return self._redirect("/?done=" + urllib.parse.quote(address))


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits; at most {MAX_JSON_DIGITS}")
    return int(text)


def _json_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


# --- HTML -------------------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ccc;padding:.3em .6em;text-align:left}
.error{color:#a00}.notice{color:#060}button{cursor:pointer}"""

LOGIN_FORM = """<h1>bouncekeeper</h1>{message}
<form method="post" action="/login">
<label>API token <input type="password" name="token" id="token" autocomplete="current-password"></label>
<button type="submit" id="login">Log in</button></form>"""


def render_page(title: str, content: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} - bouncekeeper</title><style>{STYLE}</style></head>"
        f"<body>{content}</body></html>"
    )


def render_table(rows: list[dict[str, Any]], csrf: str, notice: str, *, more: bool) -> str:
    e = html.escape
    parts = ['<h1>Disabled addresses</h1><p><a href="/charts" id="charts-link">Report and charts</a></p>']
    if notice:
        parts.append(f'<p class="notice" id="notice">{e(notice)} was re-enabled.</p>')
    parts.append(
        f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{e(csrf)}">'
        '<button type="submit" id="logout">Log out</button></form>'
    )
    if not rows:
        parts.append('<p id="empty">No address is disabled.</p>')
    else:
        parts.append(
            '<table id="disabled"><thead><tr><th>Address</th><th>State</th><th>Since</th>'
            "<th>Last reason</th><th></th></tr></thead><tbody>"
        )
        for row in rows:
            address = e(str(row.get("address", "")))
            cells = (address, row.get("state", ""), row.get("since_date", ""), row.get("last_reason", ""))
            parts.append(f'<tr data-address="{address}">')
            parts.extend(f"<td>{c if i == 0 else e(str(c or ''))}</td>" for i, c in enumerate(cells))
            parts.append(
                '<td><form method="post" action="/admin/enable">'
                f'<input type="hidden" name="address" value="{address}">'
                f'<input type="hidden" name="csrf" value="{e(csrf)}">'
                '<button type="submit">Re-enable</button></form></td></tr>'
            )
        parts.append("</tbody></table>")
    if more and rows:
        parts.append(
            f'<p><a href="/?after={e(urllib.parse.quote(str(rows[-1]["address"])))}">Next page</a></p>'
        )
    return "".join(parts)


def render_charts(data: dict[str, Any], since: str, address: str | None, view: dict[str, Any] | None) -> str:
    """The charts page: the verdict, the figures, three charts and, when asked, an address's timeline."""
    from bouncekeeper.service import charts  # noqa: PLC0415 - only this page needs it

    e = html.escape
    b = data["bounces"]
    figures = {
        "bounces": b["total"],
        "forged": data["forged"],
        "loops": data["loops"],
        "unvouched": data["unvouched"]["messages"],
        "at-threshold": data["addresses"]["at_threshold_active_count"],
        "near-threshold": data["addresses"]["near_threshold_count"],
        "open-breakers": len(data["open_breakers"]),
        "backlog": data["notifier"]["backlog"],
        "dead-letters": data["notifier"]["dead_letters"],
    }
    parts = [
        '<p><a href="/">Disabled addresses</a></p>',
        f"<h1>Report: {e(data['window']['since'])} to {e(data['window']['until'])}</h1>",
        "<p>" + " ".join(f'<a href="/charts?since={w}">{w}</a>' for w in ("1d", "7d", "30d", "90d")) + "</p>",
        f'<p id="verdict">{e(data["enforce"]["text"])}</p>',
        '<table id="figures"><tbody>',
        *(f'<tr><th>{e(k)}</th><td data-figure="{e(k)}">{v}</td></tr>' for k, v in figures.items()),
        "</tbody></table>",
        "<h2>Failures per day</h2>",
        charts.days_by_kind(b["per_day"], ("permanent", "temporary", "unknown")),
        "<h2>Top failing domains</h2>",
        charts.ranking("chart-domains", "Failures by domain", b["by_domain"]),
        "<h2>Reasons</h2>",
        charts.ranking("chart-reasons", "Failures by reason", b["by_reason"]),
        "<h2>An address's timeline</h2>",
        '<form method="get" action="/charts">'
        f'<input type="hidden" name="since" value="{e(since)}">'
        f'<label>Address <input name="address" id="address" value="{e(address or "")}"></label>'
        '<button type="submit" id="show-timeline">Show</button></form>',
    ]
    if address:
        events = (view or {}).get("events", [])
        state = (view or {}).get("state", "active")
        parts.append(f'<p id="timeline-state">{e(address)}: {e(str(state))}, {len(events)} events</p>')
        parts.append(charts.timeline(address, events))
    return "".join(parts)


# --- OpenAPI ----------------------------------------------------------------------------------------


def openapi() -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/Error"}
    err = {"description": "error", "content": {"application/json": {"schema": error}}}
    address_param = {"name": "address", "in": "path", "required": True, "schema": {"type": "string"}}
    ok_json = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}

    def op(summary: str, **extra: Any) -> dict[str, Any]:
        responses = {"200": ok_json, "400": err, "401": err, "413": err, "503": err}
        return {"summary": summary, "responses": responses, **extra}

    return {
        "openapi": "3.1.0",
        # The API's version, not the package's: /openapi.json is served without a token, and a
        # stranger learns no release to look up vulnerabilities for (no version banners, issue 14).
        "info": {"title": "bouncekeeper", "version": API_VERSION},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/bounces": {
                "post": op(
                    "Classify and record one raw bounce message",
                    parameters=[
                        {
                            "name": "rcpt",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "envelope recipient (a VERP address); or the X-Envelope-To header",
                        },
                        {"name": "sender", "in": "query", "schema": {"type": "string"}},
                    ],
                    requestBody={
                        "required": True,
                        "content": {"message/rfc822": {"schema": {"type": "string"}}},
                    },
                )
            },
            "/smtp-failures": {
                "post": op(
                    "Record a failure seen at SMTP time (the application's own MTA got a 4xx/5xx)",
                    requestBody={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["address", "code"],
                                    "properties": {
                                        "address": {"type": "string"},
                                        "code": {"type": "integer", "minimum": 400, "maximum": 599},
                                        "status": {
                                            "type": "string",
                                            "pattern": "^[245]\\.\\d{1,3}\\.\\d{1,3}$",
                                        },
                                        "text": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                )
            },
            "/addresses/{address}": {
                "get": {**op("State, counters and history of one address"), "parameters": [address_param]}
            },
            "/addresses/{address}/enable": {
                "post": {**op("Re-enable an address (counters reset)"), "parameters": [address_param]}
            },
            "/addresses/{address}/disable": {
                "post": {**op("Disable an address (by an administrator)"), "parameters": [address_param]}
            },
            "/suppressions": {
                "get": op(
                    "Disabled addresses, in address order, paged",
                    parameters=[
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                    ],
                )
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
            },
        },
    }


# --- the server -------------------------------------------------------------------------------------


def make_server(app: App, host: str, port: int) -> httpserver.BoundedServer:
    handler = type("BoundHandler", (Handler,), {"app": app})
    s = app.settings
    limits = httpserver.Limits(
        max_connections=s.max_connections,
        idle_timeout=s.idle_timeout,
        header_timeout=s.header_timeout,
        request_timeout=s.request_timeout,
    )
    return httpserver.BoundedServer((host, port), handler, limits, "http")


def parse_listen(listen: str, source: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise config.ConfigError(source, "http.listen", f"expected HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def read_token(settings: config.Settings) -> bytes:
    if not settings.http.token_file:
        raise config.ConfigError(settings.source, "http.token_file", "required: the API is never open")
    return config.read_secret(settings.http.token_file, "http.token_file", settings.source)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", help="HOST:PORT (default: [http] listen)")


def command(args: argparse.Namespace, settings: config.Settings) -> int:
    """`bouncekeeper http`: serve until SIGTERM/SIGINT."""
    token = read_token(settings)
    host, port = parse_listen(args.listen or settings.http.listen, settings.source)
    service = Service.open(settings)
    try:
        server = make_server(App(ServiceBackend(service), token, settings.http), host, port)
        serve(server)
    finally:
        service.close()
    return 0


def serve(server: httpserver.BoundedServer) -> None:
    stop = threading.Event()

    def shutdown(_sig: int, _frame: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, shutdown)
    host, port = server.server_address[:2]
    log.info("http: listening on %s:%s", host, port)
    server.serve_forever(poll_interval=0.5)
    server.server_close()
