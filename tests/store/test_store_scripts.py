"""The Lua scripts read their ARGV by the names and positions of store/scripts.py's dataclasses, and reply
with the fields its reply dataclasses parse.

Each script names its arguments once, at its top (`local name = ARGV[n]`) and uses ARGV nowhere else;
these tests read those lines, so a field added, dropped or moved on one side only fails here, before a
script reads a TTL where it expects a count.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
from typing import Any

import pytest

from bouncekeeper.store import scripts

DECLARATION = re.compile(r"^local (\w+) = ARGV\[(\d+)\]", re.MULTILINE)
RETURNS = re.compile(r"^-- Returns .*?\{([^}]*)\}", re.MULTILINE)

SIMPLE = {
    "breaker.lua": scripts.BreakerArgs,
    "record.lua": scripts.RecordArgs,
    "admin.lua": scripts.AdminArgs,
    "import.lua": scripts.ImportArgs,
}


def lua(name: str) -> str:
    return importlib.resources.files("bouncekeeper.store").joinpath("lua", name).read_text("utf-8")


def names(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def bounce_names() -> list[str]:
    """bounce.lua's ARGV by position: record.lua's, then its own."""
    return names(scripts.RecordArgs) + names(scripts.BounceArgs)[1:]


def declared(source: str) -> list[tuple[str, int]]:
    return [(name, int(n)) for name, n in DECLARATION.findall(source)]


def values(table: str) -> int:
    """The number of values in a Lua table constructor's body (commas inside calls do not count)."""
    depth, count = 0, 1
    for c in table:
        depth += c == "("
        depth -= c == ")"
        count += c == "," and depth == 0
    return count


def undeclared_uses(source: str) -> list[str]:
    """Lines that read ARGV other than by a declaration (bounce.lua's unpack aside)."""
    return [
        line
        for line in source.splitlines()
        if "ARGV" in line
        and not line.lstrip().startswith("--")
        and not DECLARATION.match(line)
        and "unpack(ARGV, 1, " not in line
    ]


@pytest.mark.parametrize(("script", "cls"), SIMPLE.items())
def test_a_script_declares_every_argument_by_its_dataclass_name_in_field_order(script: str, cls: Any) -> None:
    source = lua(script)
    assert declared(source) == [(name, n) for n, name in enumerate(names(cls), start=1)]
    assert undeclared_uses(source) == []


def test_bounce_lua_names_its_own_arguments_after_record_luas() -> None:
    source = lua("bounce.lua")
    positions = bounce_names()
    decls = declared(source)
    assert decls
    for name, n in decls:
        assert positions[n - 1] == name, (name, n)
    own = names(scripts.BounceArgs)[1:]
    assert [name for name, n in decls if n > len(names(scripts.RecordArgs))] == own
    assert undeclared_uses(source) == []
    # It passes record.lua's ARGV on whole, and overwrites by position the two it decides itself.
    assert f"unpack(ARGV, 1, {len(names(scripts.RecordArgs))})" in source
    overwritten = re.findall(r"^rargs\[(\d+)\] = .*-- (\w+)$", source, re.MULTILINE)
    assert overwritten == [("16", "frozen"), ("21", "ref")]
    for n, name in overwritten:
        assert names(scripts.RecordArgs)[int(n) - 1] == name
    assert source.count("rargs[") == len(overwritten)


@pytest.mark.parametrize("cls", [*SIMPLE.values(), scripts.BounceArgs])
def test_argv_lists_the_values_in_field_order(cls: Any) -> None:
    """Each field's value is its own name here: argv() must give the names in the scripts' order."""

    def build(of: Any) -> Any:
        return of(**{name: build(scripts.RecordArgs) if name == "record" else name for name in names(of)})

    expected = bounce_names() if cls is scripts.BounceArgs else names(cls)
    assert build(cls).argv() == expected


@pytest.mark.parametrize(
    ("script", "reply"),
    [
        ("breaker.lua", scripts.BreakerReply),
        ("record.lua", scripts.RecordReply),
        ("admin.lua", scripts.AdminReply),
    ],
)
def test_a_reply_dataclass_has_the_fields_its_script_says_it_returns(script: str, reply: Any) -> None:
    source = lua(script)
    header = RETURNS.search(source)
    assert header is not None
    assert [n.strip() for n in header.group(1).split(",")] == names(reply)
    # Every table the script returns has that many values.
    tables = re.findall(r"^\s*return \{([^}]*)\}", source, re.MULTILINE)
    assert tables
    assert {values(t) for t in tables} == {len(names(reply))}


def test_bounce_lua_replies_with_record_luas_reply_then_the_breakers() -> None:
    source = lua("bounce.lua")
    header = RETURNS.search(source)
    assert header is not None
    assert "record.lua's reply followed by" in header.group(0)
    assert [n.strip() for n in header.group(1).split(",")] == names(scripts.BounceReply)[1:]
    assert names(scripts.BounceReply)[1:] == names(scripts.BreakerReply)
    assert len(names(scripts.RecordReply)) == scripts.RecordReply.SIZE
    reply = scripts.BounceReply.parse(["new", "active", 2, 0, 1, 0, 0, 0, "", 0, 1, 1, 7])
    assert reply.record.score == 2
    assert (reply.open, reply.opened, reply.distinct) == (True, True, 7)
