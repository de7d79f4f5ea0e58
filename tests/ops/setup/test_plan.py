"""The common part of `bouncekeeper setup`: diff, apply with backups, undo byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bouncekeeper.ops.setup import plan


def _plan_for(tmp_path: Path) -> tuple[Path, Path, plan.Plan]:
    existing = tmp_path / "etc" / "main.cf"
    existing.parent.mkdir()
    existing.write_bytes(b"smtpd_milters = inet:127.0.0.1:8891\r\nmyhostname = x\n")
    os.chmod(existing, 0o640)
    created = tmp_path / "etc" / "bouncekeeper_transport"
    edits = (
        plan.FileEdit(existing, plan.read(existing), b"smtpd_milters = inet:127.0.0.1:8891, unix:/bk\n"),
        plan.FileEdit(created, plan.read(created), b"bounces.example.org lmtp:unix:/lmtp\n"),
    )
    return existing, created, plan.Plan(edits)


def test_diff_shows_every_changed_file_and_writes_nothing(tmp_path: Path) -> None:
    existing, created, change = _plan_for(tmp_path)
    text = plan.diff(change)
    assert f"--- a{existing}" in text
    assert "+smtpd_milters = inet:127.0.0.1:8891, unix:/bk" in text
    assert "--- /dev/null" in text
    assert f"+++ b{created}" in text
    assert not created.exists()
    assert existing.read_bytes().startswith(b"smtpd_milters = inet:127.0.0.1:8891\r\n")


def test_apply_then_undo_restores_bytes_and_mode(tmp_path: Path) -> None:
    existing, created, change = _plan_for(tmp_path)
    original = existing.read_bytes()
    backup = tmp_path / "backup"
    plan.apply(change, backup)
    assert existing.read_bytes() == b"smtpd_milters = inet:127.0.0.1:8891, unix:/bk\n"
    assert existing.stat().st_mode & 0o777 == 0o640
    assert created.exists()
    # A second apply of a plan computed from the changed files must keep the first backup.
    again = plan.Plan(tuple(plan.FileEdit(e.path, plan.read(e.path), e.after) for e in change.edits))
    assert not again.changes
    plan.apply(again, backup)
    touched = plan.undo(backup)
    assert set(touched) == {existing, created}
    assert existing.read_bytes() == original
    assert existing.stat().st_mode & 0o777 == 0o640
    assert not created.exists()


def test_an_unchanged_plan_writes_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "same.cf"
    path.write_bytes(b"a = b\n")
    change = plan.Plan((plan.FileEdit(path, plan.read(path), b"a = b\n"),))
    assert plan.diff(change) == ""
    plan.apply(change, tmp_path / "backup")
    assert not (tmp_path / "backup").exists()


def test_undo_keeps_files_the_operator_edited_after_apply_unless_forced(tmp_path: Path) -> None:
    existing, created, change = _plan_for(tmp_path)
    original = existing.read_bytes()
    backup = tmp_path / "backup"
    plan.apply(change, backup)
    existing.write_bytes(existing.read_bytes() + b"# the operator's own line, added later\n")
    edited = existing.read_bytes()
    with pytest.raises(plan.ChangedSinceApply) as refused:
        plan.undo(backup)
    assert refused.value.paths == [existing]
    # Nothing was touched: not the edited file, not the one apply created, not the backup.
    assert existing.read_bytes() == edited
    assert created.exists()
    assert (backup / plan.MANIFEST).exists()
    assert set(plan.undo(backup, force=True)) == {existing, created}
    assert existing.read_bytes() == original
    assert not created.exists()


def test_a_backup_from_before_the_digests_is_undone_as_before(tmp_path: Path) -> None:
    existing, created, change = _plan_for(tmp_path)
    original = existing.read_bytes()
    backup = tmp_path / "backup"
    plan.apply(change, backup)
    (backup / plan.WRITTEN).unlink()  # what an older bouncekeeper left
    existing.write_bytes(b"edited\n")
    assert set(plan.undo(backup)) == {existing, created}
    assert existing.read_bytes() == original
