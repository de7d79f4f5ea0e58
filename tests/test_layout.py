"""The package layout (the pure core, the closed store) and the pymilter name clash it guards against."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_source_root_is_not_a_package() -> None:
    # An __init__.py in milter/ would make `import milter` find our folder instead of pymilter's module.
    assert not (ROOT / "milter" / "__init__.py").exists()


def test_import_milter_is_pymilters_c_extension() -> None:
    milter = importlib.import_module("milter")
    origin = getattr(milter, "__file__", "") or ""
    assert origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), origin
    assert hasattr(milter, "register")  # libmilter's smfi_register wrapper
    milter_pkg = importlib.import_module("Milter")
    assert hasattr(milter_pkg, "Base")


# What the pure core never imports (I/O, clocks, adapters) and never calls (a clock, a file, the
# environment). Read from the syntax tree, so an alias or a multi-name import is seen too.
IMPURE_MODULES = frozenset(
    {
        "redis",
        "Milter",
        "milter",
        "aiosmtpd",
        "socket",
        "subprocess",
        "time",
        "os",
        "asyncio",
        "pathlib",
        "shutil",
        "random",
        "secrets",
        "smtplib",
        "imaplib",
        "urllib",
        "http",
        "sqlite3",
        "requests",
    }
)
IMPURE_CALLS = frozenset(
    {
        "open",
        "input",
        "datetime.now",
        "datetime.utcnow",
        "datetime.today",
        "date.today",
        "time.time",
        "time.monotonic",
        "os.getenv",
        "os.environ.get",
    }
)


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def impurities(source: str) -> list[str]:
    """The impure imports and calls in `source`, as "import NAME" / "call NAME" at a line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found += [f"import {n} (l.{node.lineno})" for n in names if n.split(".")[0] in IMPURE_MODULES][:1]
        if isinstance(node, ast.Call):
            called = _dotted(node.func)
            if called in IMPURE_CALLS or any(called.endswith("." + c) for c in IMPURE_CALLS):
                found.append(f"call {called} (l.{node.lineno})")
    return found


def test_the_purity_check_sees_what_a_string_search_missed() -> None:
    assert impurities("import os.path as p\n") == ["import os.path (l.1)"]
    assert impurities("import re, time\n") == ["import time (l.1)"]
    assert impurities("from time import monotonic as m\n") == ["import time (l.1)"]
    assert impurities("import datetime\nx = datetime.datetime.now()\n") == [
        "call datetime.datetime.now (l.2)"
    ]
    assert impurities("from . import time\nimport re\nre.compile('import time')\n") == []


def test_core_imports_and_calls_nothing_impure() -> None:
    # A second line behind import-linter's contract, which sees imports but not calls.
    for path in sorted((ROOT / "milter" / "bouncekeeper" / "core").rglob("*.py")):
        assert impurities(path.read_text(encoding="utf-8")) == [], path.relative_to(ROOT)


def _top_level_modules() -> set[str]:
    package = ROOT / "milter" / "bouncekeeper"
    modules = {f"bouncekeeper.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    return modules | {f"bouncekeeper.{p.parent.name}" for p in package.glob("*/__init__.py")}


def test_the_import_contracts_name_every_module() -> None:
    # A module missing from these lists would escape the contracts: adding one means listing it.
    with (ROOT / "pyproject.toml").open("rb") as f:
        contracts = {c["name"]: c for c in tomllib.load(f)["tool"]["importlinter"]["contracts"]}
    modules = _top_level_modules()
    layers = contracts["Layers: cli > ops > daemons > service > store > foundation > core"]["layers"]
    assert {m.strip() for layer in layers for m in layer.split("|")} == modules
    redis_sources = set(contracts["Only the store imports redis"]["source_modules"])
    assert redis_sources == modules - {"bouncekeeper.store"}


def test_the_layers_are_folders_that_show_them() -> None:
    # The README's promise: a newcomer finds a module's layer from its folder.
    package = ROOT / "milter" / "bouncekeeper"
    for layer in ("core", "store", "service", "daemons", "ops"):
        assert (package / layer / "__init__.py").is_file(), layer
