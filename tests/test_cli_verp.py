"""`bouncekeeper verp encode|decode|keyid`: JSON out, keys from the config, exit codes for scripts."""

from __future__ import annotations

import json
import pathlib

import pytest

from bouncekeeper import cli, verpkeys
from bouncekeeper.core import verp
from tests.support.logs import restore_logging  # noqa: F401 - autouse: cli.main reconfigures logging

SECRET_OLD = "old-secret-0123456789abcdef"
SECRET_NEW = "new-secret-0123456789abcdef"


@pytest.fixture
def conf(tmp_path: pathlib.Path) -> pathlib.Path:
    new = tmp_path / "new.key"
    new.write_text(SECRET_NEW + "\n")
    old = tmp_path / "old.key"
    old.write_text(SECRET_OLD + "\n")
    path = tmp_path / "bk.toml"
    path.write_text(
        f'[verp]\nbounce_domain = "bounce.example.net"\nsecret_files = ["{new}", "{old}"]\nmax_age_days = 3\n'
    )
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = cli.main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_encode_then_decode_round_trips(conf: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, enc = _run(capsys, "--config", str(conf), "verp", "encode", "Alice@Example.org", "--context", "n1")
    assert code == 0
    address = str(enc["address"])
    assert address.startswith("bounces+alice=example.org+n1+")
    assert address.endswith("@bounce.example.net")
    assert enc["key_id"] == verp.key_id_of(SECRET_NEW.encode())
    assert enc["day"] == verpkeys.today()
    code, dec = _run(capsys, "--config", str(conf), "verp", "decode", address.upper())
    assert code == 0
    assert dec == {
        "status": "valid",
        "recipient": "alice@example.org",
        "token": None,
        "context": "n1",
        "day": verpkeys.today(),
        "key_id": enc["key_id"],
    }


def test_decode_reports_expired_and_forged_with_exit_1(
    conf: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, enc = _run(capsys, "--config", str(conf), "verp", "encode", "alice@example.org", "--day", "20000")
    address = str(enc["address"])
    code, dec = _run(capsys, "--config", str(conf), "verp", "decode", address, "--today", "20004")
    assert (code, dec["status"], dec["recipient"]) == (1, "expired", "alice@example.org")
    code, dec = _run(capsys, "--config", str(conf), "verp", "decode", address, "--today", "20003")
    assert (code, dec["status"]) == (0, "valid")
    forged = address.replace("alice", "alicf")
    code, dec = _run(capsys, "--config", str(conf), "verp", "decode", forged, "--today", "20000")
    assert (code, dec["status"], dec["recipient"]) == (1, "forged", None)


def test_keyid_lists_the_signing_key_first(conf: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "--config", str(conf), "verp", "keyid")
    new_id, old_id = verp.key_id_of(SECRET_NEW.encode()), verp.key_id_of(SECRET_OLD.encode())
    assert (code, out) == (0, {"signing_key_id": new_id, "key_ids": [new_id, old_id]})


def test_encode_refuses_a_too_long_recipient_with_ex_dataerr(
    conf: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--config", str(conf), "verp", "encode", "x" * 50 + "@example.org"]) == 65
    assert "limit 64" in capsys.readouterr().err


def test_verp_without_keys_is_a_config_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bk.toml"
    path.write_text('[verp]\nbounce_domain = "bounce.example.net"\n')
    assert cli.main(["--config", str(path), "verp", "encode", "alice@example.org"]) == 78
    assert "verp.secret_files" in capsys.readouterr().err


def test_today_is_days_since_the_epoch_utc() -> None:
    assert verpkeys.today(0) == 0
    assert verpkeys.today(86_399.9) == 0
    assert verpkeys.today(1_763_769_600) == 20414  # 2025-11-22T00:00:00Z
