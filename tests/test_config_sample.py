"""bouncekeeper.toml.sample documents every key, and its commented defaults are the real defaults."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import typing

from bouncekeeper import config

SAMPLE = pathlib.Path(__file__).resolve().parent.parent / "bouncekeeper.toml.sample"
_DEFAULT_LINE = re.compile(r"^# (\w+ = .*)$", re.MULTILINE)


def _keys(cls: type, prefix: str = "") -> list[str]:
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _documented(text: str) -> dict[str, str]:
    """dotted key -> the section it is documented in, from `## key` headers and `# key = ` lines."""
    section = ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1) + "."
        elif m := re.fullmatch(r"# (\w+) = .*", line):
            found[section + m.group(1)] = line
    return found


def test_every_setting_has_a_block_with_its_commented_default() -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    documented = _documented(text)
    keys = _keys(config.Settings)
    assert len(keys) > 10
    missing = [k for k in keys if k not in documented]
    assert not missing, f"bouncekeeper.toml.sample lacks {missing}"
    for key in keys:
        assert f"## {key.rpartition('.')[2]}\n##   values:" in text, key


def test_uncommented_sample_loads_and_gives_the_defaults() -> None:
    text = _DEFAULT_LINE.sub(r"\1", SAMPLE.read_text(encoding="utf-8"))
    loaded = config.loads(text, name="sample")
    assert dataclasses.replace(loaded, source="<defaults>") == config.Settings()


def test_commented_sample_loads_as_is() -> None:
    assert config.loads(SAMPLE.read_text(encoding="utf-8")).verp == config.VerpSettings()
