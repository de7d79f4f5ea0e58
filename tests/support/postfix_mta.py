"""One Postfix + milter + Redis test stack, and how tests read it (tests/mta/test_postfix*.py)."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bouncekeeper import config, milterd, store
from tests.support.milter import MilterProcess
from tests.support.postfix import Postfix, SmtpSink
from tests.support.redis_server import RedisServer


@dataclass
class PostfixMta:
    postfix: Postfix
    sink: SmtpSink
    redis: RedisServer
    settings: config.Settings
    signer: milterd.Signer
    milter: MilterProcess  # the one whose log a failing wait shows

    def store(self) -> store.Store:
        return store.connect(self.settings)

    def send(self, listener: str, sender: str, rcpts: list[str], raw: bytes) -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", self.postfix.ports[listener], timeout=30) as smtp:
            return dict(smtp.sendmail(sender, rcpts, raw))

    def events(self, address: str) -> list[dict[str, Any]]:
        st = self.store()
        try:
            return list(st.view(address).events)
        finally:
            st.close()

    def wait_events(
        self, address: str, predicate: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 20
        while True:
            events = self.events(address)
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{address}: events {events}\nmilter log:\n{self.milter.log()[-3000:]}\n"
                    f"maillog:\n{self.postfix.log()[-3000:]}"
                )
            time.sleep(0.1)
