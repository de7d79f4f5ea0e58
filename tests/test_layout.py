"""The package layout that DEVELOPERS.md fixes, and the pymilter name clash it guards against."""

from __future__ import annotations

import importlib
import importlib.machinery
import pathlib

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


def test_core_imports_nothing_impure() -> None:
    # A coarse second line behind import-linter: the core files name no adapter library.
    forbidden = (
        "import redis",
        "import Milter",
        "import milter",
        "aiosmtpd",
        "import socket",
        "import time",
        "import os",
        "import subprocess",
        "datetime.now",
        "date.today",
    )
    for path in (ROOT / "milter" / "bouncekeeper" / "core").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for word in forbidden:
            assert word not in text, f"{path.name} imports {word}"
