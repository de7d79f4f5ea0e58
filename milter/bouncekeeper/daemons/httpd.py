"""`bouncekeeper http`: the HTTP API, Prometheus metrics and a small admin page.

Why the stdlib `ThreadingHTTPServer` and no framework: the work behind each request is a synchronous
Redis call through the same `Service` the milter uses (redis-py, blocking), the traffic is an
application's API calls and an operator's browser, and the routes fit on a page. A thread per request
needs no async Redis client and no dependency; an asyncio server would have to push every store call
into a thread pool anyway.

The rooms: http_api.py (the JSON API, /metrics and the OpenAPI document), http_admin.py (the admin
page, its sessions, CSRF tokens and login throttle), http_handler.py (routing, bearer authentication,
bodies and answers), http_backend.py (what they ask of the service and the store). This module joins
the routes into one handler and runs the daemon.

Security model:
- The JSON API and /metrics take `Authorization: Bearer <token>` only (the token file of `[http]`),
  compared in constant time. A browser never sends that header by itself, so the API cannot be the
  target of a cross-site request forgery.
- The admin page at / logs in with the same token through a form, which sets a session cookie; forms
  carry CSRF tokens, and failed logins are throttled per client (http_admin.py).
- Nothing is read of a body before the request is authenticated and its route known: a 401, 404 or
  405 closes the connection instead. Bodies larger than `max_body` are refused with 413 before they are
  read; a chunked body gets 411 and the connection is closed (its chunks are never taken for a request).
  Every error is JSON (or a plain page for the browser) with a short code and a sentence, never a 500
  for what a client sent.
- Connections, deadlines and header sizes are bounded by httpserver.py (`max_connections`, the
  timeouts of `[http]`).

Routes: ROUTES below; the API's are described by `http_api.openapi()` (served at /openapi.json).
"""

from __future__ import annotations

import argparse
import signal
import threading

from bouncekeeper import config
from bouncekeeper.daemons import http_admin, http_api, http_connection, httpserver
from bouncekeeper.daemons.http_backend import ServiceBackend
from bouncekeeper.daemons.http_handler import App
from bouncekeeper.log import get_logger
from bouncekeeper.service.bounces import Service

log = get_logger("bouncekeeper.httpd")  # as before the folders: log filters use it

ROUTES = (*http_admin.ROUTES, *http_api.ROUTES)


class Handler(http_admin.AdminPages, http_api.ApiRoutes):
    """The admin page's and the API's handlers on one server (no path is in both route tables)."""

    routes = ROUTES


# --- the server -------------------------------------------------------------------------------------


def make_server(app: App, host: str, port: int) -> httpserver.BoundedServer:
    handler = type("BoundHandler", (Handler,), {"app": app, "logins": http_admin.login_throttle()})
    s = app.settings
    limits = http_connection.Limits(
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
