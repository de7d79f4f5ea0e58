"""The admin page at /: log in with the API token, see the disabled addresses, re-enable one; the charts.

Logging in through the form sets a session cookie (`HttpOnly; SameSite=Strict`, and `Secure` with
`secure_cookie`): 256 random bits, kept in Redis by their SHA-256 with an HMAC under the token (so logging
out ends the session, and changing the token ends them all). Each state-changing form (logout included)
carries a CSRF token, an HMAC of the session under the token, and its Origin (when the browser sends one)
must be this server. The cookie is never accepted by the JSON API. Failed logins are logged, and
LOGIN_FAILURES of them within LOGIN_WINDOW lock the client out for the rest of the window (429).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from bouncekeeper.core import throttle
from bouncekeeper.daemons import metrics
from bouncekeeper.daemons.http_backend import ApiError
from bouncekeeper.daemons.http_handler import RequestHandler, route
from bouncekeeper.log import get_logger

log = get_logger("bouncekeeper.httpd")  # the daemon's name, as before the split: log filters use it

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


def login_throttle() -> throttle.ForgeryLimit:
    """A server's failed logins per client: the same bounded table and fixed window as forged bounce
    addresses."""
    return throttle.ForgeryLimit(
        per_client=LOGIN_FAILURES, window=LOGIN_WINDOW, max_clients=THROTTLED_CLIENTS
    )


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


class AdminPages(RequestHandler):
    """The admin page's handlers (the methods ROUTES names)."""

    logins: throttle.ForgeryLimit  # set on the subclass made by `make_server`: one table per server

    def _form(self) -> dict[str, str]:
        body = self._body(MAX_FORM)
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_form", "the form is not UTF-8") from exc
        return dict(pairs)

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
        wait = self.logins.blocked_for(client, time.monotonic())
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
        if self.logins.forged(client, time.monotonic()):  # counted; True from the last one allowed
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


ROUTES = (
    route("GET", "/", "page_admin", "none"),
    route("POST", "/login", "page_login", "none"),
    route("POST", "/logout", "page_logout", "none"),
    route("POST", "/admin/enable", "page_enable", "session"),
    route("GET", "/charts", "page_charts", "none"),
)


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
