"""Comments and docstrings name only files and Redis keys that exist, and no issue numbers.

The checker (tests/support/references.py) is tested first on seeded bad text, so that a clean tree
means the comments are right, not that the checker sees nothing.
"""

from __future__ import annotations

import pathlib

import pytest

from tests.support.references import PACKAGE, ROOT, lua_texts, problems, python_texts, shell_texts

CORE = PACKAGE / "core"


@pytest.mark.parametrize(
    "text",
    [
        "# see STYLE.md",  # the house style lives outside the repository
        "# facts: /work/shared/MTA-NOTES.md",
        "# see ../shared/MTA-NOTES.md",
        "# policy.py decides",  # a module that no longer exists
        "# tests/test_nothing_here.py checks it",
        "# the rules in rules/nosuchdialect.py",
        "# docs/nothing.md explains",
        "# the dead letters go to `{prefix}notify:dead`",
        "# read `bk:{alice@example.org}:score`",
        "# bounded (issue 14)",
        "# Issue 13's case",
        "# see issue #12",
        "# milter/bouncekeeper/{config,nosuchmodule}.py",
        "# `redis-cli --scan --pattern 'bk:nosuchkey:*'`",
    ],
)
def test_the_checker_finds_a_seeded_bad_reference(text: str) -> None:
    assert len(problems(text, CORE)) == 1, problems(text, CORE)


@pytest.mark.parametrize(
    "text",
    [
        "# the key schema is in store/keys.py, the rules in rules/status.py",  # relative to the package
        "# see verp.py and ../store/keys.py",  # the file's own folder, and a relative path
        "# a dialect: rules/<dialect>.py; docs/redis.md; tests/core/",
        "# the sample config (bouncekeeper.toml.sample) and contrib/dev.toml",
        "# /etc/postfix/main.cf, ~/.forward, message/delivery-status, and/or",
        "# CORPUS_DIR/score.py and <dir>/MTA-CASE.eml are the reader's",
        "# https://gitlab.com/mailman/mailman/-/blob/master/src/mailman/rest/members.py",
        "# `{prefix}{outbox}:dead`, `{prefix}{address}:seen:{id}`, `bk:{alice@example.org}:hard`",
        "# `{prefix}domain:{example.org}:frozen`, bk:events, `{prefix}+{rcpt_local}={rcpt_domain}`",
        "# Exchange's #550 5.1.1 and #5.0.0: statuses, not issues",
        "# milter/bouncekeeper/{config,log}.py, `redis-cli --scan --pattern 'bk:imap:*'`, bk:*lock",
        "# `bk:imap:{USER@SERVER/FOLDER}:cursor`",
    ],
)
def test_the_checker_passes_what_exists(text: str) -> None:
    assert problems(text, CORE) == []


def test_the_checker_reads_comments_from_tokens_and_docstrings_from_the_tree(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        '"""Module docstring."""\n'
        "x = '# not a comment'  # a comment\n"
        "def f() -> None:\n"
        "    '''Function docstring.'''\n"
        "    y = '''not a docstring'''\n"
    )
    assert sorted(python_texts(source)) == [
        (1, "Module docstring."),
        (2, "# a comment"),
        (4, "Function docstring."),
    ]
    script = tmp_path / "example.lua"
    script.write_text("local x = 1 -- a comment\nreturn x\n")
    assert list(lua_texts(script)) == [(1, " a comment")]
    shell = tmp_path / "example.sh"
    shell.write_text('#!/bin/sh\n# a comment\necho "${x#y}"\n  # indented\n')
    assert list(shell_texts(shell)) == [(2, "# a comment"), (4, "# indented")]


READERS = {".py": python_texts, ".lua": lua_texts, ".sh": shell_texts}


def test_comments_and_docstrings_name_what_exists() -> None:
    folders = ("milter", "tests", "benchmarks", "scripts")
    sources = sorted(p for f in folders for p in (ROOT / f).rglob("*") if p.suffix in READERS)
    assert len(sources) > 200  # the walk found the tree
    found = []
    for path in sources:
        texts = READERS[path.suffix](path)
        for line, text in texts:
            found += [f"{path.relative_to(ROOT)}:{line}: {p}" for p in problems(text, path.parent)]
    assert found == [], "\n".join(found)


def test_configuration_comments_name_what_exists() -> None:
    # The shipped configuration (units, MTA snippets, the sample) and the build files: whole-line `#`
    # comments, as in a shell script; not the JSON, JavaScript and PHP of contrib/ (no such comments).
    shipped = [
        p for f in ("contrib", "postfix", "exim", "sendmail") for p in (ROOT / f).rglob("*") if p.is_file()
    ]
    files = [ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / "bouncekeeper.toml.sample"] + [
        p for p in shipped if p.suffix not in (".md", ".json", ".mjs", ".php")
    ]
    assert len(files) > 20  # the walk found them
    found = []
    for path in sorted(files):
        for line, text in shell_texts(path):
            found += [f"{path.relative_to(ROOT)}:{line}: {p}" for p in problems(text, path.parent)]
    assert found == [], "\n".join(found)
