"""The documents name only files of the repository and Redis keys the store builds.

The same checker as the comments' (tests/support/references.py), over docs/*.md and every README.md.
Issue numbers are not checked here: a document may tell the story of a change.
"""

from __future__ import annotations

import pathlib
import re

from tests.support.references import ROOT, missing_files, unknown_keys

# The file headers of a unified diff (`--- a/<path>`) name the operator's file, not a path here.
_DIFF_HEADER = re.compile(r"^(?:---|\+\+\+) [ab]/")


def document_problems(doc: pathlib.Path) -> list[str]:
    name = doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc.name
    found = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if _DIFF_HEADER.match(line):
            continue
        found += [f"{name}:{number}: {p}" for p in missing_files(line, doc.parent) + unknown_keys(line)]
    return found


def test_the_document_check_finds_a_seeded_bad_reference(tmp_path: pathlib.Path) -> None:
    folder = ROOT / "docs"  # the text is checked as if it lived in docs/
    bad = "See [the notes](../MTA-NOTES.md), `docs/nothing.md` and `redis-cli GET bk:{alice@example.org}:x`."
    assert len(missing_files(bad, folder) + unknown_keys(bad)) == 3
    good = "See [the key schema](../milter/bouncekeeper/store/keys.py) and `bk:{alice@example.org}:state`."
    assert missing_files(good, folder) + unknown_keys(good) == []
    doc = tmp_path / "diff.md"
    doc.write_text("```diff\n--- a/etc/postfix/main.cf\n+++ b/etc/postfix/main.cf\n```\nsee a/etc/main.cf\n")
    assert document_problems(doc) == ["diff.md:5: names 'a/etc/main.cf': not a file of the repository"]


def _documents() -> list[pathlib.Path]:
    # var/ holds the unpacked MTAs (git ignores it); share/ links to the repository's own folders.
    skip = {".venv", ".git", "var", "share"}
    readmes = [p for p in ROOT.rglob("README.md") if not skip & set(p.relative_to(ROOT).parts)]
    return sorted(ROOT.glob("docs/*.md")) + sorted(readmes)


def test_documents_name_what_exists() -> None:
    documents = _documents()
    assert ROOT / "README.md" in documents
    assert len(documents) > 20  # the walk found the documents
    found = [problem for doc in documents for problem in document_problems(doc)]
    assert found == [], "\n".join(found)
