"""A change to an MTA's configuration files, shown before it is applied and undone byte for byte.

The MTA modules compute; this module does the file I/O common to all of them:
- `diff` renders the change for the operator (nothing is written);
- `apply` saves each original (or the fact that it did not exist) under a backup folder, then replaces
  each file atomically (write beside it, fsync, rename), keeping its mode and owner;
- `undo` puts every original back exactly as it was and removes files the plan created, unless a file
  was changed after the apply wrote it: then it touches nothing and says which (the operator's later edits
  are theirs; `force` restores anyway).

The backup folder holds one `manifest.json` naming each file and `written.json` with a digest of what the
last apply wrote to each, so an undo needs nothing but that folder.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
WRITTEN = "written.json"


class ChangedSinceApply(Exception):
    """Files edited after `apply` wrote them: an undo would discard those edits."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__(", ".join(map(str, paths)))
        self.paths = paths


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
    _write_atomic(manifest_path, _json(manifest), None)
    written = _written(backup_dir)
    for edit in edits:
        _write_atomic(edit.path, edit.after, edit.path if edit.before is not None else None)
        written[str(edit.path)] = _digest(edit.after)
    _write_atomic(backup_dir / WRITTEN, _json(written), None)


def undo(backup_dir: Path, *, force: bool = False) -> list[Path]:
    """Restore every file named in the backup's manifest; returns the paths it touched.

    ChangedSinceApply, touching nothing, when a file is no longer what the last apply wrote (unless
    `force`): restoring it would silently drop the operator's own later edits. A backup from before
    written.json existed has no digests, and is restored as it always was."""
    manifest_path = backup_dir / MANIFEST
    manifest: dict[str, str | None] = json.loads(manifest_path.read_text())
    written = _written(backup_dir)
    changed = [
        Path(key) for key in sorted(manifest) if key in written and _digest(read(Path(key))) != written[key]
    ]
    if changed and not force:
        raise ChangedSinceApply(changed)
    touched: list[Path] = []
    for key, saved in sorted(manifest.items()):
        path = Path(key)
        if saved is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomic(path, (backup_dir / saved).read_bytes(), backup_dir / saved)
        touched.append(path)
    manifest_path.unlink()
    (backup_dir / WRITTEN).unlink(missing_ok=True)
    return touched


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _written(backup_dir: Path) -> dict[str, str | None]:
    """What the last apply wrote to each file, by digest (empty for a backup made before it was kept)."""
    path = backup_dir / WRITTEN
    return json.loads(path.read_text()) if path.exists() else {}


def _json(data: object) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


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
