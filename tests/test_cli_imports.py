"""What each short-lived command imports (docs/classify-cost.md): `bouncekeeper classify` must not load
the store, asyncio or any listener, and the commands on the bounce state no listener. Checked in a fresh
interpreter, from sys.modules after the command ran: a test that fails when a top-level import comes back,
whatever the machine's speed."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.support.redis_server import RedisServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "mta" / "sendmail-gmailreputation.eml"
LISTENERS = ("aiosmtpd", "Milter", "http.server", "bouncekeeper.daemons.httpd", "bouncekeeper.daemons.lmtpd")
_PROBE = """
import contextlib, io, json, sys
from bouncekeeper import cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = cli.main(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def run_command(*argv: str) -> tuple[int, str, set[str]]:
    """Run `bouncekeeper ARGV` in a fresh interpreter: exit code, output, and every module it imported."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(argv))],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(done.stdout.splitlines()[-1])
    return result["code"], result["out"], set(result["modules"])


def test_classify_imports_no_store_no_asyncio_no_listener(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "bk.toml"
    conf.write_text("")
    code, out, modules = run_command("--config", str(conf), "classify", "--jsonl", str(FIXTURE))
    assert code == 0
    assert json.loads(out)["is_bounce"] is True  # it did classify: the check is on a command that ran
    loaded = modules & {"redis", "asyncio", "bouncekeeper.store", "bouncekeeper.service.bounces", *LISTENERS}
    assert loaded == set()


@pytest.mark.parametrize(
    "argv",
    [
        ("record", "alice@example.org", "--code", "550", "--status", "5.1.1", "--text", "no such user"),
        ("show", "alice@example.org"),
        ("ingest", str(FIXTURE)),
    ],
    ids=["record", "show", "ingest"],
)
def test_state_commands_import_no_listener(
    argv: tuple[str, ...], redis_db: RedisServer, tmp_path: pathlib.Path
) -> None:
    conf = tmp_path / "bk.toml"
    conf.write_text(f'[redis]\nurl = "{redis_db.url}"\n')
    code, _, modules = run_command("--config", str(conf), *argv)
    assert code in (0, 1)  # 1: `show` of an address nothing was recorded for
    assert "bouncekeeper.store" in modules  # they did reach Redis
    assert modules & set(LISTENERS) == set()
