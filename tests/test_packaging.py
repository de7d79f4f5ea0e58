"""The package builds with Debian 12's own tools and carries what an installed bouncekeeper needs."""

from __future__ import annotations

import email.parser
import pathlib
import shutil
import subprocess
import zipfile

import pytest

from bouncekeeper import __version__, packaged

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = pathlib.Path("/usr/bin/python3")
# What the wheel is built from (pyproject.toml's readme, license and share/ links point into these).
SOURCES = ("pyproject.toml", "LICENSE", "README.md", "bouncekeeper.toml.sample", "milter", "contrib",
           "postfix", "sendmail", "exim")  # fmt: skip


def _debian_setuptools() -> bool:
    if not DEBIAN_PYTHON.exists():
        return False
    probe = [str(DEBIAN_PYTHON), "-c", "import setuptools, wheel"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    if not _debian_setuptools():
        pytest.skip("scripts/sysdeps.sh installs python3-setuptools and python3-wheel")
    tree = tmp_path_factory.mktemp("tree")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("*.egg-info", "__pycache__", ".state")
            shutil.copytree(source, tree / name, symlinks=True, ignore=ignore)
        else:
            shutil.copyfile(source, tree / name)
    # PEP 517 with no isolation: Debian's python3-setuptools (66.1 on Debian 12) and nothing from PyPI.
    build = "from setuptools import build_meta as b; print(b.build_wheel('dist'))"
    done = subprocess.run(
        [str(DEBIAN_PYTHON), "-c", build], cwd=tree, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return zipfile.ZipFile(tree / "dist" / done.stdout.strip().splitlines()[-1])


def _metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def test_debian_setuptools_builds_it_with_the_one_version_and_the_mit_license(wheel: zipfile.ZipFile) -> None:
    meta = _metadata(wheel)
    assert meta["Version"] == __version__
    assert meta["License"] == "MIT"
    assert "License :: OSI Approved :: MIT License" in meta.get_all("Classifier", [])
    assert any(n.endswith(".dist-info/LICENSE") for n in wheel.namelist())
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[project]")[1].split("\n[")[0]


def test_the_wheel_carries_the_sample_the_units_and_the_mta_files(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert wheel.read("bouncekeeper/share/bouncekeeper.toml.sample") == packaged.SAMPLE.read_bytes()
    for unit in packaged.units():
        assert f"bouncekeeper/share/contrib/{unit.name}" in names
    for shipped in ("postfix/main.cf.snippet", "sendmail/bouncekeeper.mc", "exim/exim4.conf.example"):
        assert wheel.read(f"bouncekeeper/share/{shipped}") == (ROOT / shipped).read_bytes()
    assert any(n.startswith("bouncekeeper/store/lua/") for n in names)
    assert not any(n.startswith(("tests/", "milter/")) for n in names)
