"""A scripted remote MX (aiosmtpd, in a thread) that fails chosen recipients with chosen replies.

smtp-sink can refuse one SMTP command for every recipient with one text; the real-MTA bounce tests need a
different reply per recipient and per stage (RCPT or DATA), so that one batch makes a real MTA write its
own bounce for each failure in the table. Mail to `collect` (the bounces and delay warnings the MTA
sends back to the original sender) is kept in `collected`; `collect="*"` keeps every message accepted.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.postfix import free_port


@dataclass(frozen=True)
class Reply:
    """What the remote answers for one recipient: at "RCPT" or at "DATA" (end of data), or at "MAIL" for
    mail whose envelope sender is "collect+NAME@..." (MAIL FROM comes before any recipient, so the case
    is named by the sender)."""

    stage: str
    text: str  # the whole SMTP reply line, e.g. "550 5.1.1 <x@y>: user unknown"


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    raw: bytes


class _Handler:
    def __init__(self, replies: Mapping[str, Reply], collect: str) -> None:
        self.replies = replies
        self.collect_local, _, self.collect_domain = collect.lower().partition("@")
        self.collected: list[Received] = []
        self.lock = threading.Lock()

    def _reply(self, address: str, stage: str) -> str | None:
        local = address.split("@", 1)[0].lower()
        reply = self.replies.get(local)
        return reply.text if reply is not None and reply.stage == stage else None

    def _collects(self, address: str) -> bool:
        """The original sender, with or without a "+NAME" extension (Postfix's recipient_delimiter)."""
        if self.collect_local == "*":
            return True
        local, _, domain = address.lower().partition("@")
        return local.partition("+")[0] == self.collect_local and domain == self.collect_domain

    async def handle_MAIL(  # aiosmtpd's hook names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        local = address.split("@", 1)[0].lower()
        reply = self.replies.get(local.partition("+")[2] + "@") if self._collects(address) else None
        if reply is not None and reply.stage == "MAIL":
            return reply.text
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(  # aiosmtpd's hook names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refused = self._reply(address, "RCPT")
        if refused is not None:
            return refused
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # aiosmtpd's hook names
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        for rcpt in envelope.rcpt_tos:
            refused = self._reply(rcpt, "DATA")
            if refused is not None:
                return refused
        if any(self._collects(r) for r in envelope.rcpt_tos):
            raw = envelope.original_content or envelope.content or b""
            assert isinstance(raw, bytes)
            with self.lock:
                self.collected.append(Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), raw))
        return "250 2.0.0 OK"


class RemoteMx:
    def __init__(self, replies: Mapping[str, Reply], *, collect: str) -> None:
        self.port = free_port()
        self.handler = _Handler(replies, collect)
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, server_hostname="mx.remote.test"
        )

    def start(self) -> RemoteMx:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def collected(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.collected)
