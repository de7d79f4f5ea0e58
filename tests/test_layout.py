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
        # Only the Import/ImportFrom statements above give names, and a statement has a line number.
        found += [
            f"import {n} (l.{getattr(node, 'lineno', '?')})"
            for n in names
            if n.split(".")[0] in IMPURE_MODULES
        ][:1]
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


def _top_level_modules(package: pathlib.Path = ROOT / "milter" / "bouncekeeper") -> set[str]:
    """Each module and folder right under the package, as import-linter names them."""
    modules = {f"bouncekeeper.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    return modules | {f"bouncekeeper.{p.parent.name}" for p in package.glob("*/__init__.py")}


LAYERS = "Layers: cli > ops > daemons > service > store > foundation > core"
ONLY_THE_STORE = "Only the store imports redis"


def uncovered(modules: set[str], contracts: dict[str, dict[str, list[str]]]) -> list[str]:
    """What keeps the contracts from covering `modules` exactly: a module in no layer, or not a source of
    the redis ban; a listed module that does not exist. Empty when each module is in each contract."""
    layered = {m.strip() for layer in contracts[LAYERS]["layers"] for m in layer.split("|")}
    sources = set(contracts[ONLY_THE_STORE]["source_modules"])
    return sorted(
        [f"{m}: in no layer" for m in modules - layered]
        + [f"{m}: may import redis" for m in modules - sources - {"bouncekeeper.store"}]
        + [f"{m}: listed, but no such module" for m in (layered | sources) - modules]
    )


def _contracts() -> dict[str, dict[str, list[str]]]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return {c["name"]: c for c in tomllib.load(f)["tool"]["importlinter"]["contracts"]}


def test_a_module_or_folder_added_to_the_package_is_seen(tmp_path: pathlib.Path) -> None:
    for path in ("__init__.py", "cli.py", "store/__init__.py", "store/keys.py", "share/x.toml"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).touch()
    assert _top_level_modules(tmp_path) == {"bouncekeeper.cli", "bouncekeeper.store"}


def test_the_contract_check_fails_for_a_module_added_without_being_listed() -> None:
    contracts, modules = _contracts(), _top_level_modules()
    assert uncovered(modules | {"bouncekeeper.newmodule"}, contracts) == [
        "bouncekeeper.newmodule: in no layer",
        "bouncekeeper.newmodule: may import redis",
    ]
    assert uncovered(modules - {"bouncekeeper.log"}, contracts) == [
        "bouncekeeper.log: listed, but no such module"
    ]
    # Listed in the layers only: still free to import redis.
    contracts[LAYERS]["layers"] = [*contracts[LAYERS]["layers"], "bouncekeeper.newmodule"]
    assert uncovered(modules | {"bouncekeeper.newmodule"}, contracts) == [
        "bouncekeeper.newmodule: may import redis"
    ]


def test_the_import_contracts_name_every_module() -> None:
    # A module missing from these lists would escape the contracts: adding one means listing it.
    assert uncovered(_top_level_modules(), _contracts()) == []


def test_the_layers_are_folders_that_show_them() -> None:
    # The README's promise: a newcomer finds a module's layer from its folder.
    package = ROOT / "milter" / "bouncekeeper"
    for layer in ("core", "store", "service", "daemons", "ops"):
        assert (package / layer / "__init__.py").is_file(), layer


# Rooms a newcomer can hold in mind. A function may run longer only with its reason written on the line
# above it, as a comment starting "# long:"; a file has no such escape: split it.
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 620


def overlong(source: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """The functions of `source` longer than `limit` lines, decorators included, with no "# long:" reason
    on the line above their first line."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            reason = first >= 2 and lines[first - 2].strip().startswith("# long:")
            if length > limit and not reason:
                found.append(f"{node.name} (l.{first}, {length} lines)")
    return found


def test_the_length_check_counts_what_a_reader_reads() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(4))
    assert overlong(f"@decorated\ndef f():\n{body}", limit=5) == ["f (l.1, 6 lines)"]
    assert overlong(f"def f():\n{body}", limit=5) == []
    assert overlong(f"# long: a table the reader scans\ndef f():\n{body}    y = 1\n", limit=5) == []


def test_no_function_is_longer_than_60_lines_without_a_reason() -> None:
    for path in sorted((ROOT / "milter").rglob("*.py")):
        assert overlong(path.read_text(encoding="utf-8")) == [], path.relative_to(ROOT)


def test_no_module_is_longer_than_about_600_lines() -> None:
    for path in sorted((ROOT / "milter").rglob("*.py")):
        count = len(path.read_text(encoding="utf-8").splitlines())
        assert count <= MAX_FILE_LINES, f"{path.relative_to(ROOT)}: {count} lines"
