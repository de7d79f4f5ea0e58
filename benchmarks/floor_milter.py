"""The floor for benchmarks/postfix_throughput.py: a pymilter milter that negotiates the same protocol
steps as bouncekeeper's and does nothing in them (inbound: accept at the first RCPT, as bouncekeeper's
accept_early; for the ORIGINATING listener a fixed chgfrom at end of message). What it costs is
pymilter's and libmilter's own cost for those steps, so the difference to bouncekeeper's row is
bouncekeeper's code.

    python benchmarks/floor_milter.py unix:/path/to/socket [connect]

With "connect" it accepts every session at CONNECT, the first event: after that Postfix sends it nothing
more for the session. That is the least any milter in `smtpd_milters` can cost (a socket, the
negotiation, one event per SMTP session), whatever it does.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import Milter

CONTINUE: int = Milter.CONTINUE
ACCEPT: int = Milter.ACCEPT


class Floor(Milter.Base):  # type: ignore[misc]  # pymilter is untyped
    def __init__(self) -> None:
        self.originating = False

    @Milter.noreply  # type: ignore[misc]
    @Milter.symlist("{daemon_name}")  # type: ignore[misc]
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.originating = self.getsymval("{daemon_name}") == "ORIGINATING"
        return CONTINUE

    @Milter.noreply  # type: ignore[misc]
    @Milter.symlist("{auth_authen}", "i")  # type: ignore[misc]
    def envfrom(self, mailfrom: str, *params: str) -> int:
        return CONTINUE

    @Milter.symlist("i")  # type: ignore[misc]
    def envrcpt(self, to: str, *params: str) -> int:
        return CONTINUE if self.originating else ACCEPT  # bouncekeeper's accept_early

    @Milter.symlist("i")  # type: ignore[misc]
    def data(self) -> int:
        return CONTINUE if self.originating else ACCEPT

    @Milter.noreply  # type: ignore[misc]
    def header(self, name: str, value: str) -> int:
        return CONTINUE

    def body(self, chunk: bytes) -> int:
        return int(Milter.SKIP)

    def eom(self) -> int:
        self.chgfrom("<bounces+user=elsewhere.example+0000000000000000@bounces.example.org>")
        return ACCEPT


class ConnectFloor(Milter.Base):  # type: ignore[misc]  # pymilter is untyped
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        return ACCEPT


def main() -> int:
    Milter.factory = ConnectFloor if sys.argv[2:] == ["connect"] else Floor
    importlib.import_module("milter").set_flags(Milter.CHGFROM | Milter.SETSYMLIST)  # as bouncekeeper asks
    os.umask(0o111)  # a 0666 socket: Postfix's smtpd (user postfix) must be able to write it
    Milter.runmilter("floor", sys.argv[1], timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
