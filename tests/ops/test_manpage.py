"""bouncekeeper(1), generated from the CLI's parser: every command is in it, and groff reads it cleanly."""

from __future__ import annotations

import datetime
import shutil
import subprocess

import pytest

from bouncekeeper import cli
from bouncekeeper.ops import manpage


@pytest.fixture(scope="module")
def page() -> str:
    parser, _handlers = cli.build_parser()
    return manpage.render(parser, datetime.date(2026, 12, 4))


def test_every_subcommand_has_a_section_with_its_usage(page: str) -> None:
    for name in cli.COMMANDS:
        assert f"\n.SS bouncekeeper {manpage._roff(name)}\n" in page, name
    # Nested commands too, with their own options.
    for nested in ("config check", "verp encode", "probes run", "notify dead\\-letters"):
        assert f"\n.SS bouncekeeper {nested}\n" in page, nested
    assert ".B \\-\\-context CONTEXT" in page


def test_the_page_names_the_version_the_default_config_and_the_exit_codes(page: str) -> None:
    assert page.startswith('.TH BOUNCEKEEPER 1 "2026-12-04" "bouncekeeper ')
    assert "/etc/bouncekeeper/bouncekeeper.toml" in page
    assert "78 (EX_CONFIG)" in page


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff renders man pages (man-db needs it)")
def test_groff_renders_it_without_a_warning(page: str) -> None:
    done = subprocess.run(
        ["groff", "-man", "-ww", "-z"], input=page, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert done.stderr == ""


def test_bouncekeeper_man_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", "/dev/null", "man", "--date", "2026-12-04"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(".TH BOUNCEKEEPER 1")
    assert ".SS bouncekeeper health" in out
