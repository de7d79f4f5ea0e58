"""The README's layout table names every module and folder of the package, and only paths that exist.

A newcomer looks for a module there first: one added without a row (or a word in its folder's row), or a
row left behind by a move, sends them to the wrong place.
"""

from __future__ import annotations

import pathlib
import re

from tests.support.references import ROOT


def layout_table(readme: str) -> list[tuple[str, str]]:
    """The (path, what) rows of the "## Layout" table, the cells as written."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 2 and cells[0] not in ("path", "---"):
            rows.append((cells[0], cells[1]))
    return rows


def _expand(path: str) -> list[str]:
    """`{config,log}.py` -> config.py, log.py (as a shell expands it)."""
    alternatives = re.search(r"\{([^{}]*)\}", path)
    if not alternatives:
        return [path]
    head, tail = path[: alternatives.start()], path[alternatives.end() :]
    return [p for one in alternatives.group(1).split(",") for p in _expand(head + one + tail)]


def layout_paths(rows: list[tuple[str, str]]) -> set[str]:
    """Every path the table names, from the repository's root: each row's own path(s), and the files and
    folders its text names in backticks (`keys.py`, `setup/`), relative to the row's folder."""
    named = set()
    for path_cell, what in rows:
        bases = [p for cell in re.findall(r"`([^`]+)`", path_cell) for p in _expand(cell)]
        named |= set(bases)
        for base in (b for b in bases if b.endswith("/")):
            for name in re.findall(r"`([\w./{},-]+(?:\.py|/))`", what):
                named |= {base + p for p in _expand(name)}
    return named


def modules_of(package: pathlib.Path, root: pathlib.Path = ROOT) -> set[str]:
    """Each module (but __init__) and each folder of code (Python or Lua) of the package, as a path from
    the repository's root."""
    found = set()
    for path in package.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if path.suffix == ".py" and path.name != "__init__.py":
            found.add(relative)
        elif path.is_dir() and (any(path.glob("__init__.py")) or any(path.glob("*.lua"))):
            found.add(relative + "/")
    return found


def test_the_layout_check_reads_the_table_and_sees_a_module_missing(tmp_path: pathlib.Path) -> None:
    readme = (
        "# x\n\n## Layout\n\n| path | what |\n|---|---|\n"
        "| `pkg/core/` | the core: `verp.py`, `rules/` (one module per dialect) |\n"
        "| `pkg/{config,log}.py` | the foundation |\n| `tests/` | x \\| y |\n\n## Next\n| `no/` | x |\n"
    )
    rows = layout_table(readme)
    assert rows == [
        ("`pkg/core/`", "the core: `verp.py`, `rules/` (one module per dialect)"),
        ("`pkg/{config,log}.py`", "the foundation"),
        ("`tests/`", "x \\| y"),
    ]
    named = layout_paths(rows)
    assert named == {
        "pkg/core/",
        "pkg/core/verp.py",
        "pkg/core/rules/",
        "pkg/config.py",
        "pkg/log.py",
        "tests/",
    }
    package = tmp_path / "pkg"
    for path in (
        "core/__init__.py",
        "core/verp.py",
        "core/rcpt.py",
        "core/rules/__init__.py",
        "config.py",
        "log.py",
        "store/lua/x.lua",
        "core/__pycache__/verp.pyc",
    ):
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).touch()
    assert modules_of(package, tmp_path) - named == {"pkg/core/rcpt.py", "pkg/store/lua/"}


def test_the_readme_layout_table_names_every_module_and_only_what_exists() -> None:
    named = layout_paths(layout_table((ROOT / "README.md").read_text(encoding="utf-8")))
    assert sorted(p for p in named if not (ROOT / p).exists()) == []
    modules = modules_of(ROOT / "milter" / "bouncekeeper")
    assert len(modules) > 40  # the walk found the package
    assert sorted(modules - named) == []
