"""The Lua scripts' interface: each script's ARGV built from one frozen dataclass, its reply parsed into one.

A script's arguments are positional. The field order of its dataclass here is the one place that order is
written on the Python side; the script names each argument once, at its top (`local name = ARGV[n]`),
and tests/store/test_store_scripts.py checks that the names and positions agree, and that the replies'
fields are the ones each script's header says it returns. Every value is what redis-py sends as is: an
int, or a str (epoch seconds as `repr`, so the script gets Python's exact double).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


def _source(name: str) -> str:
    return importlib.resources.files("bouncekeeper.store").joinpath("lua", name).read_text("utf-8")


def sources() -> dict[str, str]:
    """Each script's source by name, as it is loaded into Redis."""
    lib = _source("lib.lua")  # track_read, track_write and outbox_add
    out = {name: lib + _source(f"{name}.lua") for name in ("record", "admin", "import")}
    out["breaker"] = _source("breaker.lua")
    # The single-server path: breaker and record as local functions of one script (bounce.lua).
    out["bounce"] = (
        f"local function breaker(KEYS, ARGV)\n{out['breaker']}\nend\n"
        f"local function record(KEYS, ARGV)\n{out['record']}\nend\n{_source('bounce.lua')}"
    )
    return out


def sha1(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 -- Redis names scripts by SHA-1


class _Args:
    """ARGV in field order."""

    __slots__ = ()

    def argv(self) -> list[Any]:
        instance: Any = self  # every subclass is a dataclass, which mypy cannot see from here
        return [getattr(self, f.name) for f in dataclasses.fields(instance)]


@dataclass(frozen=True, slots=True)
class BreakerArgs(_Args):
    """breaker.lua: the domain's circuit breaker."""

    address: str
    now: str
    window: int
    threshold: int
    freeze: int
    feed: int  # 1: a scored, authentic failure counts towards opening; 0: only whether it is open


@dataclass(frozen=True, slots=True)
class RecordArgs(_Args):
    """record.lua: one event for one address (bounce.lua passes its first 22 ARGV on as these)."""

    effect: str
    now: str
    day: int
    mode: str
    rule: str
    soft_threshold: int
    soft_window: int
    threshold: int
    quiet: int
    count_window: int
    history_size: int
    history_ttl: int
    dedup_ttl: int  # 0: no dedup
    event_json: str
    event_id: str
    frozen: int  # 1: the domain's breaker is open (bounce.lua decides it itself)
    notify_hard: int  # 1: the outbox also announces every hard bounce
    outbox_mode: str  # stream | list (a Cluster's per-address pending list)
    outbox_maxlen: int
    history_line: str
    ref: str  # the event's stream entry ID (bounce.lua writes the entry and fills it in)
    replay_ttl: int  # 0: no signed VERP address, no replay check


@dataclass(frozen=True, slots=True)
class BounceArgs(_Args):
    """bounce.lua, the single-server path: record.lua's ARGV first, then its own."""

    record: RecordArgs
    breaker_use: int  # 0 not asked, 1 asked and fed, 2 asked only (a failure that is not authentic)
    address: str
    breaker_window: int
    breaker_threshold: int
    breaker_freeze: int
    stream_size: int
    event_kind: str
    source: str
    domain: str

    def argv(self) -> list[Any]:
        own = _Args.argv(self)
        return [*self.record.argv(), *own[1:]]


@dataclass(frozen=True, slots=True)
class AdminArgs(_Args):
    """admin.lua: an operator's act on one address."""

    action: str  # enable | disable | reset
    new_state: str
    now: str
    by: str
    event_json: str
    history_size: int
    history_ttl: int
    outbox_mode: str
    outbox_maxlen: int
    history_line: str
    ref: str


@dataclass(frozen=True, slots=True)
class ImportArgs(_Args):
    """import.lua: one imported suppression."""

    state: str
    since: str
    by: str
    history_line: str
    ref: str
    history_size: int


@dataclass(frozen=True, slots=True)
class BreakerReply:
    open: bool
    opened: bool  # this call opened it
    distinct: int  # the addresses failing within the window

    @classmethod
    def parse(cls, r: Sequence[Any]) -> BreakerReply:
        return cls(open=bool(r[0]), opened=bool(r[1]), distinct=int(r[2]))


@dataclass(frozen=True, slots=True)
class RecordReply:
    status: str  # new | duplicate
    state: str
    score: int
    soft_count: int
    scored: bool
    converted: bool
    disabled: bool
    reached: bool
    why: str
    crossed: bool

    SIZE: ClassVar[int] = 10

    @classmethod
    def parse(cls, r: Sequence[Any]) -> RecordReply:
        return cls(
            status=str(r[0]),
            state=str(r[1]),
            score=int(r[2]),
            soft_count=int(r[3]),
            scored=bool(r[4]),
            converted=bool(r[5]),
            disabled=bool(r[6]),
            reached=bool(r[7]),
            why=str(r[8]),
            crossed=bool(r[9]),
        )


@dataclass(frozen=True, slots=True)
class BounceReply:
    record: RecordReply
    open: bool
    opened: bool
    distinct: int

    @classmethod
    def parse(cls, r: Sequence[Any]) -> BounceReply:
        size = RecordReply.SIZE
        breaker = BreakerReply.parse(r[size:])
        return cls(RecordReply.parse(r[:size]), breaker.open, breaker.opened, breaker.distinct)


@dataclass(frozen=True, slots=True)
class AdminReply:
    previous: str
    state: str

    @classmethod
    def parse(cls, r: Sequence[Any]) -> AdminReply:
        return cls(previous=str(r[0]), state=str(r[1]))
