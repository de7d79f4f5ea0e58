"""A remote MX that refuses every recipient with `550 5.1.1 ... User unknown`, as a real MX does for a
dead mailbox. smtp-sink's `-f RCPT` answers `500 5.3.0 Error: command failed`, which says nothing about
the address (a classifier rightly calls it temporary); the full-loop test needs the real thing."""

from __future__ import annotations

from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.postfix import free_port


class _Refuse:
    def __init__(self) -> None:
        self.refused: list[str] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[Any]
    ) -> str:
        self.refused.append(address)
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"


class DeadMx:
    def __init__(self) -> None:
        self.port = free_port()
        self.handler = _Refuse()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def refused(self) -> list[str]:
        return self.handler.refused

    def start(self) -> DeadMx:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
