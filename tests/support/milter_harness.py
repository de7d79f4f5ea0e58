"""The milter adapter in-process: one pymilter TestCtx connection (which records chgfrom, replies and
headers) to a BounceMilter built as `bouncekeeper milter` builds it, on the real Service and a real
redis-server. The adapter's tests, the parity test and the failover test drive the milter through it."""

from __future__ import annotations

import io
import pathlib
import time
from collections.abc import Iterator

import Milter
import Milter.testctx
import pytest

from bouncekeeper import config, store, verpkeys
from bouncekeeper.core import verp
from bouncekeeper.core.scoring import State
from bouncekeeper.daemons import milter_adapter, milterd
from bouncekeeper.service import bounces
from bouncekeeper.store.event import Event, EventKind, Source
from tests.support.redis_server import RedisServer

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "milter"
BOUNCE_DOMAIN = "bounces.example.org"
PROTECTED = "app-in@example.org"
APP = "app@example.org"
INBOUND_IP = "192.0.2.25"  # not in originating_networks
LOCAL_IP = "127.0.0.1"  # in the default originating_networks


ORDINARY = b"From: someone@remote.example\r\nTo: x@example.org\r\nSubject: hello\r\n\r\nJust mail.\r\n"


def milter_settings(tmp_path: pathlib.Path, redis: RedisServer, extra: str = "") -> config.Settings:
    key = tmp_path / "verp.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    sections: dict[str, list[str]] = {"verp": [], "milter": [], "policy": []}
    current = ""
    for line in extra.strip().splitlines():
        if line.startswith("["):
            current = line.strip("[] ")
        elif line.strip():
            sections[current].append(line)
    # The flow tests act as an enforcing site that lists its application's sender; the tests of the
    # defaults (observe, no sender listed) say so in `extra`.
    if not any(line.startswith("senders") for line in sections["verp"]):
        sections["verp"].append(f'senders = ["{APP}"]')
    if not any(line.startswith("mode") for line in sections["policy"]):
        sections["policy"].append('mode = "enforce"')
    text = f"""state_dir = "{tmp_path}/state"
[redis]
url = "{redis.url}"
[verp]
bounce_domain = "{BOUNCE_DOMAIN}"
secret_files = ["{key}"]
{chr(10).join(sections["verp"])}
[milter]
protected_recipients = ["{PROTECTED}"]
{chr(10).join(sections["milter"])}
[policy]
{chr(10).join(sections["policy"])}
"""
    return config.loads(text)


NO_REPLY_BITS = (
    Milter.P_NR_CONN | Milter.P_NR_HELO | Milter.P_NR_MAIL | Milter.P_NR_RCPT | Milter.P_NR_DATA
    | Milter.P_NR_UNKN | Milter.P_NR_EOH | Milter.P_NR_BODY | Milter.P_NR_HDR
)  # fmt: skip


class Ctx(Milter.testctx.TestCtx):  # type: ignore[misc]
    """TestCtx treats a NOREPLY or SKIP answer as a refusal and stops; a real MTA just goes on. For the
    flow tests offer what an MTA without no-reply and SKIP support offers (the milter then answers
    CONTINUE); negotiation itself is tested with the full offer below."""

    def __init__(self, offer_no_reply: bool = False) -> None:
        super().__init__()
        offer = 0x1FFFFF if offer_no_reply else 0x1FFFFF & ~NO_REPLY_BITS & ~Milter.P_SKIP
        self.offer = [Milter.CURR_ACTS, offer, 0, 0]

    def _negotiate(self) -> int:
        self._body = None
        self._bodyreplaced = False
        self._priv = None
        self._opts = list(self.offer)
        self._symlist = [None] * 7  # a new connection: macro lists are negotiated afresh
        self._stage: int | None = -1  # None after a callback, as Milter.testctx's own callbacks leave it
        rc = int(Milter.negotiate_callback(self, self._opts))
        self._protocol = self._opts[1]
        return rc


class Verp:
    """The site's VERP signer, with the tests' two extras: an address signed on a given day, and a decode."""

    def __init__(self, settings: config.Settings) -> None:
        signer = verpkeys.load_signer(settings)
        assert signer is not None
        self.signer = signer

    def address(self, rcpt: str, day: int | None = None, context: str = "") -> str:
        if day is None:
            return self.signer.address_for(rcpt, context)
        return verp.encode(
            rcpt, keyring=self.signer.keyring, bounce_domain=BOUNCE_DOMAIN, day=day, context=context
        )

    def check(self, address: str) -> verp.VerpResult:
        return verp.decode(
            address,
            keyring=self.signer.keyring,
            bounce_domain=BOUNCE_DOMAIN,
            today=self.signer.today(),
            max_age_days=14,
        )


def forge(address: str) -> str:
    """A signed address with the last character of its local part changed: a guess that must not verify."""
    local, _, domain = address.partition("@")
    return f"{local[:-1]}{'0' if local[-1] != '0' else '1'}@{domain}"


class Harness:
    """One TestCtx connection to a BounceMilter built as `bouncekeeper milter` builds it."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.store = store.connect(settings)
        self.verp = Verp(settings)
        self.signer = self.verp.signer
        self.runtime = milter_adapter.Runtime(
            milterd.routing_from_settings(settings), bounces.Service(settings, self.store), self.signer
        )
        Milter.factory = lambda: milter_adapter.BounceMilter(self.runtime)
        self.ctx = Ctx()

    def connect(self, ip: str, daemon_name: str = "MTA") -> int:
        self.ctx._setsymval("{daemon_name}", daemon_name)
        self.ctx._setsymval("i", "4QTEST1")
        return int(self.ctx._connect(helo="client.example", ip=ip))

    def connect_raw(
        self, family: int, hostaddr: str | tuple[str, int], daemon_name: str = "mta.example.test"
    ) -> None:
        """A new connection as libmilter reports one that connect() (Milter.testctx's, IP strings only)
        cannot: a socket path, or an address with its port; the connect callback in the stage it expects."""
        self.ctx._negotiate()
        self.ctx._setsymval("{daemon_name}", daemon_name)
        self.ctx._stage = Milter.M_CONNECT
        Milter.connect_callback(self.ctx, "localhost", family, hostaddr)
        self.ctx._stage = None

    def feed(self, raw: bytes, sender: str, *rcpts: str) -> int:
        return int(self.ctx._feedFile(io.BytesIO(raw), sender, *rcpts))

    def verp_for(self, rcpt: str, context: str = "", day: int | None = None) -> str:
        return self.verp.address(rcpt, day, context)

    def disable(self, address: str) -> None:
        """Disable an address as an operator would: the suppression tests' recipient."""
        event = Event(
            at=time.time(), kind=EventKind.DISABLED, source=Source.CLI, address=address, note="test"
        )
        self.store.admin(address, "disable", event, state=State.DISABLED_ADMIN)

    def decode(self, address: str) -> verp.VerpResult:
        return self.verp.check(address)


@pytest.fixture
def harness(tmp_path: pathlib.Path, redis_db: RedisServer) -> Iterator[Harness]:
    h = Harness(milter_settings(tmp_path, redis_db))
    yield h
    h.store.close()


def make_harness(tmp_path: pathlib.Path, redis: RedisServer, extra: str) -> Harness:
    return Harness(milter_settings(tmp_path, redis, extra))
