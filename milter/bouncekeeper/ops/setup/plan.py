"""A change to an MTA's configuration files, shown before it is applied and undone byte for byte.

The MTA modules compute; this module does the file I/O common to all of them:
- `diff` renders the change for the operator (nothing is written);
- `apply` saves each original (or the fact that it did not exist) under a backup folder, then replaces
  each file atomically (write beside it, fsync, rename), keeping its mode and owner;
- `undo` puts every original back exactly as it was and removes files the plan created.

The backup folder holds one `manifest.json` naming each file, so an undo needs nothing but that folder.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class FileEdit:
    """One file's whole new content; `before` is None when the file does not exist yet."""

    path: Path
    before: bytes | None
    after: bytes

    @property
    def changes(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one `setup` run would change, plus what the operator must still do by hand."""

    edits: tuple[FileEdit, ...]
    # Steps a program must not take for the operator (DNS records, a reload at a time they choose).
    notes: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return any(edit.changes for edit in self.edits)


def read(path: Path) -> bytes | None:
    """A file's bytes, or None when it does not exist (a plan may create it)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def diff(plan: Plan) -> str:
    """The plan as a unified diff, one section per changed file (empty when nothing would change)."""
    out: list[str] = []
    for edit in plan.edits:
        if not edit.changes:
            continue
        before = (edit.before or b"").decode("utf-8", "surrogateescape").splitlines(keepends=True)
        after = edit.after.decode("utf-8", "surrogateescape").splitlines(keepends=True)
        old = "/dev/null" if edit.before is None else f"a{edit.path}"
        out.extend(difflib.unified_diff(before, after, fromfile=old, tofile=f"b{edit.path}"))
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n\\ No newline at end of file\n"
    return "".join(out)


def apply(plan: Plan, backup_dir: Path) -> None:
    """Write the plan's files, keeping the originals in `backup_dir` for `undo`.

    A second run of an unchanged plan changes nothing and keeps the first backup: the backup is always of
    the operator's own configuration, never of ours.
    """
    edits = [edit for edit in plan.edits if edit.changes]
    if not edits:
        return
    backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    manifest_path = backup_dir / MANIFEST
    manifest: dict[str, str | None] = {}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
    for edit in edits:
        key = str(edit.path)
        if key in manifest:
            continue  # already backed up by an earlier apply: that copy is the operator's original
        if edit.before is None:
            manifest[key] = None
        else:
            saved = backup_dir / f"{len(manifest):03d}-{edit.path.name}"
            shutil.copy2(edit.path, saved)  # copy2 keeps the mode and times; the bytes are what undo needs
            manifest[key] = saved.name
    _write_atomic(manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n", None)
    for edit in edits:
        _write_atomic(edit.path, edit.after, edit.path if edit.before is not None else None)


def undo(backup_dir: Path) -> list[Path]:
    """Restore every file named in the backup's manifest; returns the paths it touched."""
    manifest_path = backup_dir / MANIFEST
    manifest: dict[str, str | None] = json.loads(manifest_path.read_text())
    touched: list[Path] = []
    for key, saved in sorted(manifest.items()):
        path = Path(key)
        if saved is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomic(path, (backup_dir / saved).read_bytes(), backup_dir / saved)
        touched.append(path)
    manifest_path.unlink()
    return touched


def _write_atomic(path: Path, data: bytes, like: Path | None) -> None:
    """Replace `path` with `data` in one rename, with the mode and owner of `like` when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if like is not None:
            st = like.stat()
            os.chmod(tmp, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
