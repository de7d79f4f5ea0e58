"""The JSON API and its OpenAPI document: what an application calls, with the bearer token of `[http]`.

Each route is written once, in ROUTES; its OpenAPI operation (summary, query parameters, body) is data in
OPERATIONS under the route's handler, and `openapi()` joins the two (path parameters come from the
route's template). tests/daemons/test_httpd.py fails when a route has no operation or an operation no
route. The API takes `Authorization: Bearer <token>` only, never the admin page's cookie: a browser does
not send that header by itself, so the API cannot be the target of a cross-site request forgery.
"""

from __future__ import annotations

import re
import urllib.parse
from http import HTTPStatus
from typing import Any

from bouncekeeper.daemons import metrics
from bouncekeeper.daemons.http_backend import ApiError, Unavailable
from bouncekeeper.daemons.http_handler import RequestHandler, Route, route

API_VERSION = "1"  # the routes and their JSON; raised when a change breaks a client


class ApiRoutes(RequestHandler):
    """The JSON API's handlers (the methods ROUTES names)."""

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


ROUTES = (
    route("GET", "/openapi.json", "get_openapi", "none"),
    route("GET", "/metrics", "get_metrics"),
    route("POST", "/bounces", "post_bounce"),
    route("POST", "/smtp-failures", "post_smtp_failure"),
    route("GET", "/suppressions", "get_suppressions"),
    route("GET", "/addresses/{address}", "get_address"),
    route("POST", "/addresses/{address}/enable", "post_enable"),
    route("POST", "/addresses/{address}/disable", "post_disable"),
)


# --- OpenAPI ----------------------------------------------------------------------------------------

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    # The API's version, not the package's: /openapi.json is served without a token, and a stranger
    # learns no release to look up vulnerabilities for (no version banners).
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
}

_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_OK_JSON = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
# What an operation answers unless OPERATIONS says otherwise.
RESPONSES = {"200": _OK_JSON, "400": _ERROR, "401": _ERROR, "413": _ERROR, "503": _ERROR}

# Each bearer route's OpenAPI operation, by its handler (the path and method are the route's).
OPERATIONS: dict[str, dict[str, Any]] = {
    "post_bounce": {
        "summary": "Classify and record one raw bounce message",
        "parameters": [
            {
                "name": "rcpt",
                "in": "query",
                "schema": {"type": "string"},
                "description": "envelope recipient (a VERP address); or the X-Envelope-To header",
            },
            {"name": "sender", "in": "query", "schema": {"type": "string"}},
        ],
        "requestBody": {"required": True, "content": {"message/rfc822": {"schema": {"type": "string"}}}},
    },
    "post_smtp_failure": {
        "summary": "Record a failure seen at SMTP time (the application's own MTA got a 4xx/5xx)",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["address", "code"],
                        "properties": {
                            "address": {"type": "string"},
                            "code": {"type": "integer", "minimum": 400, "maximum": 599},
                            "status": {"type": "string", "pattern": "^[245]\\.\\d{1,3}\\.\\d{1,3}$"},
                            "text": {"type": "string"},
                        },
                    }
                }
            },
        },
    },
    "get_address": {"summary": "State, counters and history of one address"},
    "post_enable": {"summary": "Re-enable an address (counters reset)"},
    "post_disable": {"summary": "Disable an address (by an administrator)"},
    "get_suppressions": {
        "summary": "Disabled addresses, in address order, paged",
        "parameters": [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "after", "in": "query", "schema": {"type": "string"}},
        ],
    },
    "get_metrics": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}},
}


def openapi() -> dict[str, Any]:
    """The OpenAPI document of the bearer routes (served at /openapi.json)."""
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        if r.auth == "bearer":
            paths.setdefault(r.name, {})[r.method.lower()] = operation(r)
    return {**DOCUMENT, "paths": paths}


def operation(r: Route) -> dict[str, Any]:
    """A route's OpenAPI operation: its OPERATIONS entry, the usual responses, its path parameters."""
    described: dict[str, Any] = {"responses": RESPONSES, **OPERATIONS[r.handler]}
    in_path = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in r.pattern.groupindex
    ]
    if in_path:
        described["parameters"] = in_path + described.get("parameters", [])
    return described
