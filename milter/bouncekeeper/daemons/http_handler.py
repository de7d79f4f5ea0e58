"""The request handler every HTTP route runs in: routing, bearer authentication, bodies and answers.

A `Route` names a method, a path template and the handler method that serves it; the routes themselves
are the API's (http_api.py) and the admin page's (http_admin.py), joined in httpd.py. `RequestHandler`
finds the route (404, or 405 naming the allowed methods), checks a bearer route's token before anything
else, reads bodies only within their limits and after that check, and turns every refusal into JSON: an
`ApiError` into its status and code, `Unavailable` into a 503 with Retry-After, anything unexpected into
a logged 500.
"""

from __future__ import annotations

import hmac
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from bouncekeeper import config
from bouncekeeper.core.addresses import normalise
from bouncekeeper.daemons import http_connection, httpserver, metrics
from bouncekeeper.daemons.http_backend import ApiError, Backend, Unavailable
from bouncekeeper.log import get_logger

log = get_logger("bouncekeeper.httpd")  # the daemon's name, as before the split: log filters use it

# JSON integers (an SMTP code): a 5,000-digit one costs quadratic time to convert, then a ValueError.
MAX_JSON_DIGITS = 20


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str  # the template, for metrics and OpenAPI
    handler: str  # method name on the request handler
    auth: str  # "bearer", "session", "none"


def route(method: str, template: str, handler: str, auth: str = "bearer") -> Route:
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$"
    return Route(method, re.compile(regex), template, handler, auth)


class App:
    """Everything a request handler needs; one per server."""

    def __init__(self, backend: Backend, token: bytes, settings: config.HttpSettings) -> None:
        self.backend = backend
        self.token = token
        self.settings = settings


class RequestHandler(httpserver.BoundedHandler):
    """What every route's handler runs on; the routes' own methods are http_api.ApiRoutes' and
    http_admin.AdminPages', joined in httpd.Handler."""

    app: App  # set on the subclass made by `make_server`
    routes: tuple[Route, ...] = ()  # set on the subclass that joins the API and the admin page
    authenticated = False  # this request's: its body may be read as an accepted request

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
            route, params = self._find(method, parts.path)
            route_name = route.name
            if route.auth == "bearer":
                self._require_bearer()
                self.authenticated = True
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
        except (http_connection.Cut, ConnectionError):
            raise  # the connection is cut or gone: nothing to answer (the server counts and logs)
        except Exception:  # The last line of defence of a daemon: log with traceback, answer 500.
            log.exception("http: %s %s failed", method, parts.path)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            self._send_json(status, {"error": "internal", "message": "internal error; see the server log"})
        metrics.HTTP_REQUESTS.inc(route_name, str(int(status)))

    def _find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route of `method` on `path` and its parameters; else 405 naming the allowed methods, or 404."""
        allowed = []
        for candidate in self.routes:
            match = candidate.pattern.match(path)
            if match:
                if candidate.method == method:
                    return candidate, {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                allowed.append(candidate.method)
        if allowed:
            raise ApiError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "method_not_allowed",
                f"{method} is not allowed on {path}; use {', '.join(allowed)}",
                {"Allow": ", ".join(allowed)},
            )
        raise ApiError(HTTPStatus.NOT_FOUND, "not_found", f"no such endpoint: {path}")

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


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits; at most {MAX_JSON_DIGITS}")
    return int(text)


def _json_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
