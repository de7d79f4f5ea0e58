from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

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


def test_logs_carry_no_timestamp_of_their_own_under_journald(tmp_path: pathlib.Path) -> None:
    # systemd's JOURNAL_STREAM names the device:inode of the stream it gave as stderr: here, a file.
    err = tmp_path / "stderr"
    code = (
        "from bouncekeeper import log; log.setup(); log.get_logger('bouncekeeper.t').warning('hello %s', 'x')"
    )
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parent.parent / "milter"))
    with err.open("wb") as out:
        st = os.fstat(out.fileno())
        for stream in (f"{st.st_dev}:{st.st_ino}", "1:2"):
            subprocess.run(
                [sys.executable, "-c", code], env=dict(env, JOURNAL_STREAM=stream), stderr=out, check=True
            )
    journal, elsewhere = err.read_text().splitlines()
    assert journal == "WARNING bouncekeeper.t: -: hello x"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ WARNING bouncekeeper\.t: -: hello x", elsewhere)


def test_config_check_json_shows_permissions_as_written(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bk.toml"
    path.write_text('[milter]\nsocket_mode = 0o640\n[lmtp]\nsocket_mode = "0666"\n')
    assert cli.main(["--config", str(path), "config", "check", "--json"]) == 0
    out = capsys.readouterr().out
    settings = json.loads(out[out.index("{") :])
    assert settings["milter"]["socket_mode"] == "0640"
    assert settings["lmtp"]["socket_mode"] == "0666"
