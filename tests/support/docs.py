"""The commands a document under docs/ tells the operator to run, so that a test runs exactly those.

A rehearsal reads the fenced blocks under a heading, replaces the documented paths (`/etc/exim4`, the
TOML file ...) with its own, and runs each `bouncekeeper` line as written: the docs are what is tested.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping

ROOT = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = pathlib.Path(sys.executable).parent


def fenced_blocks(doc: pathlib.Path, heading: str) -> list[str]:
    """The ```sh blocks of the section whose heading line is `heading` (up to the next heading)."""
    text = doc.read_text()
    start = re.search(rf"^#+ {re.escape(heading)}\s*$", text, re.MULTILINE)
    if start is None:
        raise LookupError(f"{doc}: no heading {heading!r}")
    end = re.search(r"^#+ ", text[start.end() :], re.MULTILINE)
    section = text[start.end() : start.end() + end.start() if end else len(text)]
    return re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def commands(block: str, paths: Mapping[str, str], program: str = "bouncekeeper") -> list[list[str]]:
    """The block's `program` lines as argv, documented paths replaced (longest first)."""
    found = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0] != program:
            continue
        found.append([_replace(word, paths) for word in words])
    return found


def _replace(word: str, paths: Mapping[str, str]) -> str:
    for documented in sorted(paths, key=len, reverse=True):
        if word == documented or word.startswith(documented + "/"):
            return paths[documented] + word[len(documented) :]
    return word


def run(argv: list[str], extra_path: tuple[pathlib.Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    """A documented command as the operator runs it: `bouncekeeper` from this venv, on this checkout."""
    path = os.pathsep.join([*(str(p) for p in extra_path), str(VENV_BIN), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, PYTHONPATH=str(ROOT / "milter"))
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
