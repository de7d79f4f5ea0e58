"""A real webhook receiver for the tests: stdlib ThreadingHTTPServer on 127.0.0.1, in a thread.

`script` decides the answers: a list of status codes consumed one per request (then `default`), so a
test can say "503, 503, then 200". `stop()`/`start()` take it off the network and bring it back on the
same port (a notifier then sees "connection refused"). Every request is recorded with what arrived.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what we answered

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int = 0
    script: list[int] = field(default_factory=list)
    default: int = 200
    delays: list[float] = field(default_factory=list)  # seconds to stall before answering, per request
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    delay = receiver.delays.pop(0) if receiver.delays else 0.0
                time.sleep(delay)
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.requests.append(Request(self.path, dict(self.headers.items()), body, status))
                self.send_response(status)
                for name, value in receiver.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def delivered(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]
