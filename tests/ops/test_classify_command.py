"""`bouncekeeper classify [--jsonl] [--rcpt ENVELOPE_RCPT] FILE...`."""

from __future__ import annotations

import io
import json
import pathlib
import sys

import pytest

from bouncekeeper import cli, verpkeys
from bouncekeeper.core import verp

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
GMX = FIXTURES / "sisimai-bsd-lhost-gmx-03.eml"
VACATION = FIXTURES / "sisimai-bsd-rfc3834-01.eml"
SECRET = "classify-test-secret-0123456789"


@pytest.fixture
def conf(tmp_path: pathlib.Path) -> pathlib.Path:
    key = tmp_path / "k.key"
    key.write_text(SECRET + "\n")
    path = tmp_path / "bk.toml"
    path.write_text(f'[verp]\nbounce_domain = "bounce.example.net"\nsecret_files = ["{key}"]\n')
    return path


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_jsonl_has_one_line_per_file_named_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    relative = (
        str(GMX.relative_to(pathlib.Path.cwd())) if GMX.is_relative_to(pathlib.Path.cwd()) else str(GMX)
    )
    assert cli.main(["classify", "--jsonl", relative, str(VACATION)]) == 0
    bounce, vacation = _lines(capsys)
    assert bounce["file"] == relative
    assert bounce["is_bounce"] is True
    assert bounce["message_type"] == "bounce"
    failures = bounce["failures"]
    assert isinstance(failures, list)
    assert {f["recipient"]: f["kind"] for f in failures} == {
        "mikeneko@example.co.jp": "permanent",
        "sabineko@example.co.jp": "temporary",
    }
    assert set(failures[0]) >= {
        "recipient",
        "kind",
        "status",
        "reason",
        "dsn_class",
        "reply_code",
        "diagnostic",
        "remote_mta",
        "stage",
        "smtp_command",
    }
    assert bounce["original_message_id"]
    assert vacation["file"] == str(VACATION)
    assert (vacation["is_bounce"], vacation["message_type"], vacation["failures"]) == (False, "autoreply", [])


def test_stdin_is_read_for_dash(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(GMX.read_bytes())))
    assert cli.main(["classify", "--jsonl", "-"]) == 0
    (line,) = _lines(capsys)
    assert line["file"] == "-"
    assert line["is_bounce"] is True


def test_human_output_names_each_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["classify", str(GMX)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{GMX}: bounce (2 failed)")
    assert "mikeneko@example.co.jp  permanent  userunknown" in out
    assert "sabineko@example.co.jp  temporary  mailboxfull" in out


def test_missing_file_is_reported_and_the_others_still_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["classify", "--jsonl", "/nonexistent/x.eml", str(GMX)]) == 1
    captured = capsys.readouterr()
    assert "/nonexistent/x.eml" in captured.err
    assert len(captured.out.splitlines()) == 1


def test_rcpt_is_decoded_as_verp_and_attributes_the_failure(
    conf: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyring = verp.Keyring.from_secrets([SECRET.encode()])
    address = verp.encode(
        "sabineko@example.co.jp", keyring=keyring, bounce_domain="bounce.example.net", day=verpkeys.today()
    )
    assert cli.main(["--config", str(conf), "classify", "--jsonl", "--rcpt", address, str(GMX)]) == 0
    (line,) = _lines(capsys)
    assert line["verp_status"] == "valid"
    assert line["verp_recipient"] == "sabineko@example.co.jp"
    failures = line["failures"]
    assert isinstance(failures, list)
    assert [(f["recipient"], f["reason"]) for f in failures] == [("sabineko@example.co.jp", "mailboxfull")]


def test_forged_rcpt_is_not_trusted(conf: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    forged = "bounces+eve=example.org+20000-00-0000000000000000@bounce.example.net"
    assert cli.main(["--config", str(conf), "classify", "--jsonl", "--rcpt", forged, str(GMX)]) == 0
    (line,) = _lines(capsys)
    assert line["verp_status"] == "forged"
    assert line["verp_recipient"] is None
    failures = line["failures"]
    assert isinstance(failures, list)
    assert len(failures) == 2


def test_rcpt_without_verp_keys_is_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["classify", "--jsonl", "--rcpt", "anything@example.org", str(GMX)]) == 0
    (line,) = _lines(capsys)
    assert line["verp_status"] == "not_configured"
    assert line["verp_recipient"] is None
