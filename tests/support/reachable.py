"""What programs running as other users need from this checkout, reachable by them wherever it is.

Exim delivers as Debian-exim and re-executes its own binary with the test's configuration; a milter
started with `[milter] user` drops to that user and goes on importing Python modules. A checkout under a
folder only root may enter (root's home, any `mktemp -d`) is out of their reach. Then the pieces they use
(the package's source, the MTA files, the venv, the unpacked Exim) are copied once per session to a
world-readable folder under /tmp, removed at exit, and the tests run them from there; a checkout that
everybody can reach is used as it is. `scripts/test-private-checkout.sh` runs the suite from such a
folder.
"""

from __future__ import annotations

import atexit
import functools
import os
import pathlib
import shutil
import stat
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
# What the unprivileged programs read: the package, the MTA files Exim and Sendmail include, the scripts
# that unpack the MTAs,
# that unpack the MTAs, and the unpacked Exim (var/mta/exim4, when it is there already).
COPIED = ("milter", "exim", "postfix", "sendmail", "scripts", "contrib", "bouncekeeper.toml.sample", "var")


def world_reachable(path: pathlib.Path) -> bool:
    """Whether any user can reach `path`: every folder above it searchable by others."""
    path = path.resolve()
    for folder in [*reversed(path.parents), path] if path.is_dir() else reversed(path.parents):
        if not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _venv() -> pathlib.Path:
    return pathlib.Path(sys.prefix)


@functools.cache
def root() -> pathlib.Path:
    """The checkout, or its world-readable copy when other users cannot reach the checkout."""
    if world_reachable(ROOT) and world_reachable(_venv()):
        return ROOT
    copy = pathlib.Path(tempfile.mkdtemp(prefix="bk-reachable-"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in COPIED:
        source = ROOT / name
        if not source.exists():
            continue
        if source.is_dir():
            shutil.copytree(source, copy / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(source, copy / name)
    # The venv's python is a link to the system's interpreter; its site-packages come along.
    shutil.copytree(_venv(), copy / ".venv", symlinks=True, ignore=ignore)
    for folder, dirs, files in os.walk(copy):
        for name in (*dirs, *files):
            entry = pathlib.Path(folder) / name
            if not entry.is_symlink():
                mode = entry.stat().st_mode
                searchable = entry.is_dir() or mode & stat.S_IXUSR
                entry.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if searchable else 0))
    copy.chmod(0o755)
    return copy


def python() -> str:
    """The interpreter for a program that may drop its privileges: the venv's, where others reach it."""
    base = root()
    if base == ROOT:
        return sys.executable
    return str(base / ".venv" / "bin" / pathlib.Path(sys.executable).name)


def environment() -> dict[str, str]:
    """os.environ with PYTHONPATH on the reachable copy of the package's source."""
    return dict(os.environ, PYTHONPATH=str(root() / "milter"))
