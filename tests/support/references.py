"""What a comment, a docstring or a document names: files of the repository, Redis keys, issue numbers.

A comment that names a file which moved, a key the store no longer builds, or an issue by its number
sends its reader looking for something that is not there. `problems()` finds each such reference in one
piece of text; `python_texts()`, `lua_texts()` and `shell_texts()` yield the comments and docstrings of a
source file to check.
"""

from __future__ import annotations

import ast
import inspect
import io
import pathlib
import re
import tokenize
from collections.abc import Iterator
from functools import cache

from bouncekeeper.store import keys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "milter" / "bouncekeeper"

# Folders of a checkout that hold no file of the repository (tools' state, caches, the venv).
_NOT_THE_REPOSITORY = frozenset({".git", ".venv", ".state", "__pycache__", ".mypy_cache", ".ruff_cache"})

# The kinds of file a comment names by a bare name: the repository's own. A bare `main.cf` or
# `redis.conf` is an MTA's or a server's file, not one of ours, so only names with a folder are checked
# for those.
_OWN_KINDS = "py|lua|md"
_FILE_KINDS = (
    f"{_OWN_KINDS}|toml|sh|cf|mc|conf|in|service|timer|json|jsonl|txt|eml|sample|snippet|example|html"
)
# A path names a file (with a kind above) or starts with a folder of the repository's root.
_TOP_FOLDERS = "|".join(sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name[0] != "."))
# One character of a path's name, or a placeholder: <dialect>, {name}, {config,log} (each one of these).
_C = r"(?:[\w.<>*-]|\{[^{}\s]*\})"
_PATH = re.compile(
    rf"""(?<![\w/.:@$%{{-])          # not the middle of a word, a URL, an address or a variable
    (?P<path>
        (?:\.\./|~/|/)?              # relative to a parent, a home or the root
        (?:{_C}+/)+{_C}*             # with folders: any name
      | {_C}+\.(?:{_OWN_KINDS})      # a bare name: the repository's own kinds
    )(?![\w])""",
    re.VERBOSE,
)
# Top-level directories of the Filesystem Hierarchy Standard: an absolute path under one of them is the
# system's (/etc/postfix/main.cf), any other (a developer's /work/...) means nothing on the reader's machine.
_SYSTEM_ROOTS = frozenset(
    {
        "bin",
        "boot",
        "dev",
        "etc",
        "home",
        "lib",
        "lib64",
        "media",
        "mnt",
        "opt",
        "proc",
        "root",
        "run",
        "sbin",
        "srv",
        "sys",
        "tmp",
        "usr",
        "var",
    }
)
# A Redis key written with the configured prefix as `{prefix}` or the default one, `bk:`.
_KEY = re.compile(r"(?:\{prefix\}|(?<![\w:])bk:)(?P<key>[\w{*][\w{}<>*:@./-]*)")
# "#550" is Exchange's, "#5.0.0" a status: only the word says it is an issue.
_ISSUE = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)


def problems(text: str, folder: pathlib.Path) -> list[str]:
    """What `text` (a comment or a docstring of a file in `folder`) names that does not exist."""
    return issue_numbers(text) + missing_files(text, folder) + unknown_keys(text)


def issue_numbers(text: str) -> list[str]:
    return [f"names {m.group(0)!r}: a number means nothing to a reader" for m in _ISSUE.finditer(text)]


def missing_files(text: str, folder: pathlib.Path) -> list[str]:
    return [f"names {p!r}: not a file of the repository" for p in _paths(text) if not _exists(p, folder)]


def unknown_keys(text: str) -> list[str]:
    found = []
    for m in _KEY.finditer(text):
        key = m.group("key").rstrip(".:")
        # A SCAN pattern (`bk:imap:*`, `bk:{alice@example.org}:seen:*`) matches a key that is built.
        pattern = re.compile(".*".join(re.escape(part) for part in key.split("*")))
        known = any(shape.fullmatch(key.replace("*", "x")) for shape in _key_shapes()) or (
            "*" in key and any(pattern.fullmatch(k) for k in _built_keys("x"))
        )
        if not known:
            found.append(f"names the Redis key {m.group(0).rstrip('.:')!r}: store/keys.py builds none such")
    return found


def _paths(text: str) -> Iterator[str]:
    for m in _PATH.finditer(text):
        path = m.group("path").rstrip(".")
        # A path without a file kind is a folder, a MIME type (message/rfc822) or a choice (and/or): only
        # one that starts at a folder of the repository's root is surely ours.
        kindless = "/" in path and not re.search(rf"\.(?:{_FILE_KINDS})$", path.rstrip("/"))
        if not kindless or re.match(rf"(?:{_TOP_FOLDERS})/", path):
            yield path


def _exists(path: str, folder: pathlib.Path) -> bool:
    alternatives = re.search(r"\{([^{}]*,[^{}]*)\}", path)
    if alternatives:  # {config,log}.py: each of them
        head, tail = path[: alternatives.start()], path[alternatives.end() :]
        return all(_exists(head + one + tail, folder) for one in alternatives.group(1).split(","))
    if path.startswith("/"):
        return path.split("/")[1] in _SYSTEM_ROOTS
    if path.startswith("~/"):
        return True  # the operator's home, never the repository's
    if re.match(r"(?:<[^>]*>|\{[^}]*\}|[A-Z][A-Z0-9_]*)/", path):
        return True  # under a folder the reader names (CORPUS_DIR/score.py, <dir>/x.eml): not ours
    pattern = re.sub(r"<[^>]*>|\{[^}]*\}", "*", path).rstrip("/")
    if "/" not in pattern:
        return any(p.match(pattern) for p in _repository_files())
    # Relative to the file's own folder or one above it (up to the repository's root), or to the package
    # and its folders: `store/keys.py` and `rules/status.py` read the same from core/ and from tests/.
    bases = [b for b in (folder, *folder.parents) if b.is_relative_to(ROOT)] + list(_package_folders())
    # resolve(): a path up from the root names a file beside the checkout, not one in it.
    return any(match.resolve().is_relative_to(ROOT) for base in bases for match in base.glob(pattern))


@cache
def _package_folders() -> tuple[pathlib.Path, ...]:
    return (PACKAGE, *(p.parent for p in PACKAGE.rglob("__init__.py")))


@cache
def _repository_files() -> tuple[pathlib.Path, ...]:
    found = []
    for path in ROOT.rglob("*"):
        if not _NOT_THE_REPOSITORY.intersection(path.relative_to(ROOT).parts):
            found.append(path)
    return tuple(found)


@cache
def _key_shapes() -> tuple[re.Pattern[str], ...]:
    """Every key store/keys.py builds, after the prefix, as a pattern: each argument matches any text."""
    marker = "\x00"
    return tuple(re.compile(re.escape(k).replace(re.escape(marker), ".+")) for k in _built_keys(marker))


@cache
def _built_keys(argument: str) -> tuple[str, ...]:
    """Every key store/keys.py builds, after the prefix, with `argument` for each argument.

    Read from the `Keys` class itself (each property, and each method called with `argument` for every
    parameter; a `suffix` takes each suffix the module defines), so a key added there is known here.
    """
    suffixes = [v for n, v in vars(keys).items() if n.isupper() and isinstance(v, str)]
    schema = keys.Keys(prefix="")
    built: list[str] = []
    for name, member in inspect.getmembers(keys.Keys):
        if name.startswith("_") or name.startswith("parse_") or name.endswith("_pattern"):
            continue
        if isinstance(member, property):
            built.append(getattr(schema, name))
            continue
        if not inspect.isfunction(member):
            continue  # the `prefix` field
        params = list(inspect.signature(member).parameters)[1:]
        for suffix in suffixes if "suffix" in params else [argument]:
            args = [suffix if p == "suffix" else argument for p in params]
            result = getattr(schema, name)(*args)
            built += [result] if isinstance(result, str) else list(result)
    return tuple(sorted(set(built)))


def python_texts(path: pathlib.Path) -> Iterator[tuple[int, str]]:
    """The comments (from the tokens) and the docstrings (from the syntax tree) of a Python file."""
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                yield node.body[0].lineno, docstring


def lua_texts(path: pathlib.Path) -> Iterator[tuple[int, str]]:
    """The `--` comments of a Lua script (its strings never hold `--`)."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        _code, sep, comment = line.partition("--")
        if sep:
            yield number, comment


def shell_texts(path: pathlib.Path) -> Iterator[tuple[int, str]]:
    """The whole-line `#` comments of a shell script (a `#` after code may be a parameter expansion)."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("#") and not line.startswith("#!"):
            yield number, line.lstrip()
