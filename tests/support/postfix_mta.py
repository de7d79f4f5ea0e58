"""One Postfix + milter + Redis test stack, and how tests read it (tests/mta/test_postfix*.py)."""

from __future__ import annotations

import contextlib
import smtplib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bouncekeeper import config, store, verpkeys
from tests.support.lifecycle import running
from tests.support.milter import MilterProcess
from tests.support.postfix import Postfix, SmtpSink
from tests.support.redis_server import RedisServer


@dataclass
class PostfixMta:
    postfix: Postfix
    sink: SmtpSink
    redis: RedisServer
    settings: config.Settings
    signer: verpkeys.Signer
    milter: MilterProcess  # the one whose log a failing wait shows

    def reset(self) -> None:
        """What every test starts from: Redis and the milter running, Redis empty."""
        if self.redis.proc is None:
            self.redis.start()
        if self.milter.proc is None:
            self.milter.start()
        client = self.redis.client()
        client.flushall()
        client.close()

    def wait_queue_empty(self) -> None:
        """Until Postfix has delivered or dropped everything: what did not arrive by then never will."""
        deadline = time.monotonic() + 20
        while self.postfix.queue():
            assert time.monotonic() < deadline, f"queue not empty:\n{self.postfix.log()[-3000:]}"
            time.sleep(0.1)

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


def message(subject: str, extra: str = "", sender: str = "app@example.org") -> bytes:
    """A small message with a unique subject (how tests find it at the sink) and extra header lines."""
    return f"From: {sender}\r\nTo: someone\r\nSubject: {subject}\r\n{extra}\r\nbody of {subject}\r\n".encode()


@contextlib.contextmanager
def started(
    postfix: Postfix, sink: SmtpSink, dead: SmtpSink, bounce_domain: str, *milters: MilterProcess
) -> Iterator[tuple[config.Settings, verpkeys.Signer]]:
    """Start the milters and both MXes, route Postfix to them, start Postfix; stop all in reverse.

    `sink` takes all mail, `dead` (refusing every recipient) takes dead.test, and the bounce domain goes
    to this Postfix's own MX listener: where Postfix's own bounce ends up when the non-SMTP milter passes
    it on undecided (Redis down). Yields the first milter's settings and VERP signer.
    """
    with running(*milters, sink, dead):
        postfix.relay_port = sink.port
        postfix.settings["transport_maps"] = (
            f"inline:{{dead.test=smtp:[127.0.0.1]:{dead.port}, "
            f"{bounce_domain}=smtp:[127.0.0.1]:{postfix.port}}}"
        )
        with running(postfix):
            settings = config.load(milters[0].config)
            signer = verpkeys.load_signer(settings)
            assert signer is not None
            yield settings, signer
