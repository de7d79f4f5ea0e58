from __future__ import annotations

import pathlib

import pytest

from bouncekeeper import cli


def test_config_check_accepts_a_good_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    path = tmp_path / "bk.toml"
    path.write_text(f'[verp]\nbounce_domain = "b.example"\nsecret_files = ["{key}"]\n')
    assert cli.main(["--config", str(path), "config", "check"]) == 0
    assert "OK" in capsys.readouterr().out


def test_config_check_names_file_and_key_of_an_unknown_key(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bk.toml"
    path.write_text("[redis]\nurll = 'redis://x'\n")
    assert cli.main(["--config", str(path), "config", "check"]) == 78
    err = capsys.readouterr().err
    assert f"{path}: redis.urll: unknown key" in err


def test_config_check_refuses_a_missing_key_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bk.toml"
    path.write_text(f'[verp]\nsecret_files = ["{tmp_path}/nope"]\n')
    assert cli.main(["--config", str(path), "config", "check"]) == 78
    assert "verp.secret_files[0]" in capsys.readouterr().err
