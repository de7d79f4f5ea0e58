"""A TOML table -> a frozen dataclass, checked against the dataclass's fields and their types.

The machinery under `config`: a dataclass's fields are the table's allowed keys, a nested dataclass is a
nested table, and each value must have its field's type (a Literal's values, a tuple's items, a number
that is not negative). It knows nothing of bouncekeeper's settings nor of files: a problem is a
`SchemaError` naming the dotted key, and `config` adds the file's name to it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")


class FileMode(int):
    """A unix socket's permission bits: written "0660" (a string, as in OpenDKIM's and chmod's configs)
    or 0o660 (a TOML octal integer); both keys that take one accept either form."""

    def __repr__(self) -> str:
        return f'"{self:04o}"'


class SchemaError(Exception):
    """A value the dataclass does not take, with the dotted key it stands at ("" for the whole table)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


def build(cls: type[T], data: object, prefix: str = "") -> T:
    """`cls` from the table `data`; `prefix` is the dotted key of the table itself, with its dot."""
    if not isinstance(data, dict):
        raise SchemaError(prefix.rstrip("."), "expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = prefix + key
        f = fields.get(key)
        if f is None or f.metadata.get("internal"):
            raise SchemaError(dotted, "unknown key")
        kwargs[key] = coerce(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        # The dataclass's own checks (__post_init__) speak of the table: their message names the key.
        raise SchemaError(prefix.rstrip("."), str(exc)) from exc


def coerce(hint: Any, value: object, key: str) -> Any:
    """`value` checked against the type `hint` (and converted where TOML writes it otherwise)."""
    if dataclasses.is_dataclass(hint):
        return build(typing.cast(type[Any], hint), value, key + ".")
    check = _BY_ORIGIN.get(get_origin(hint)) or _BY_TYPE.get(hint)
    return check(hint, value, key) if check is not None else value


def _literal(hint: Any, value: object, key: str) -> object:
    allowed = get_args(hint)
    if value not in allowed:
        raise SchemaError(key, f"must be one of {', '.join(map(repr, allowed))}, not {value!r}")
    return value


def _tuple(hint: Any, value: object, key: str) -> tuple[Any, ...]:
    (item,) = get_args(hint)[:1]
    if not isinstance(value, list):
        raise SchemaError(key, "expected a list")
    return tuple(coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))


def _float(hint: Any, value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(key, f"expected a number, not {value!r}")
    if value < 0:
        raise SchemaError(key, "must not be negative")
    return float(value)


def _int(hint: Any, value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(key, f"expected an integer, not {value!r}")
    if value < 0:
        raise SchemaError(key, "must not be negative")
    return value


def _exact(hint: Any, value: object, key: str) -> object:
    if not isinstance(value, hint):
        raise SchemaError(key, f"expected {hint.__name__}, not {value!r}")
    return value


def _file_mode(hint: Any, value: object, key: str) -> FileMode:
    text = value if isinstance(value, str) else ""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return FileMode(value)
    if 3 <= len(text) <= 4 and all(c in "01234567" for c in text) and int(text, 8) <= 0o777:
        return FileMode(int(text, 8))
    raise SchemaError(key, f'expected permissions as "0660" or 0o660 (0000..0777), not {value!r}')


Check = Callable[[Any, object, str], Any]
# A generic hint by its origin (Literal["a", "b"], tuple[str, ...]); a plain one by itself. No
# `X | None`: TOML has no null, a setting's absence is its default.
_BY_ORIGIN: dict[object, Check] = {Literal: _literal, tuple: _tuple}
_BY_TYPE: dict[object, Check] = {
    FileMode: _file_mode,
    float: _float,
    int: _int,
    str: _exact,
    bool: _exact,
}
