"""`bouncekeeper health`: Nagios exit codes from a real Redis, real sockets and the real outbox."""

from __future__ import annotations

import json
import pathlib
import socket
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bouncekeeper import cli
from bouncekeeper.store.keys import Keys
from bouncekeeper.store.outbox import GROUP
from tests.support.exim import free_port
from tests.support.redis_server import RedisServer


def _config(tmp_path: pathlib.Path, redis_url: str, extra: str = "") -> str:
    path = tmp_path / "bk.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n[redis]\nurl = "{redis_url}"\n{extra}')
    return str(path)


TARGET = '[[notify.targets]]\nname = "app"\nurl = "http://127.0.0.1:9/{address}"\nsecret_file = "k"\n'


def _health(capsys: pytest.CaptureFixture[str], config: str, *args: str) -> tuple[int, str]:
    code = cli.main(["--config", config, "health", *args])
    return code, capsys.readouterr().out


def test_a_reachable_store_is_ok(
    tmp_path: pathlib.Path, redis_db: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _health(capsys, _config(tmp_path, redis_db.url))
    assert (code, out) == (0, "BOUNCEKEEPER OK - store ok: answers\n")


def test_an_unreachable_store_is_critical(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, f"redis://127.0.0.1:{free_port()}", "socket_timeout = 0.5\nretries = 0\n")
    code, out = _health(capsys, config)
    assert code == 2
    assert out.startswith("BOUNCEKEEPER CRITICAL - store critical: unreachable:")


def test_the_embedded_store_is_looked_for_never_started(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _health(capsys, _config(tmp_path, ""))
    assert code == 2
    assert "the embedded redis-server is not running" in out
    assert not (tmp_path / "state" / "redis" / "redis.sock").exists()


def test_outbox_backlog_and_dead_letters_against_their_limits(
    tmp_path: pathlib.Path, redis_db: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, redis_db.url, TARGET)
    client = redis_db.client()
    for n in range(3):
        client.xadd(Keys("bk:").outbox, {"type": "disabled", "address": f"a{n}@example.org"})
    code, out = _health(capsys, config, "--outbox-warn", "3", "--outbox-crit", "5")
    assert code == 1
    assert "outbox warning: 3 (warning at 3, critical at 5)" in out
    assert out.rstrip().endswith("| outbox=3 dead-letters=0")
    # A notifier that read one and acknowledged it: two left (one read, unacknowledged, counts too).
    client.xgroup_create(Keys("bk:").outbox, GROUP, id="0")
    got: Any = client.xreadgroup(GROUP, "n1", {Keys("bk:").outbox: ">"}, count=2)
    client.xack(Keys("bk:").outbox, GROUP, got[0][1][0][0])
    client.xadd(Keys("bk:").outbox_dead, {"target": "app/url"})
    code, out = _health(capsys, config, "--outbox-warn", "3", "--json")
    report = json.loads(out)
    assert code == 1
    assert report["status"] == "WARNING"
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["outbox"]["value"] == 2
    assert by_name["outbox"]["status"] == "OK"
    assert by_name["dead-letters"]["status"] == "WARNING"
    client.close()


@pytest.fixture
def greeter() -> Iterator[str]:
    """A unix socket that greets like an LMTP server, and closes."""
    with tempfile.TemporaryDirectory(prefix="bk-h-") as directory:
        path = f"{directory}/lmtp.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(4)

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                conn.sendall(b"220 test LMTP\r\n")
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        yield path
        server.close()


def test_services_answer_or_are_critical(
    tmp_path: pathlib.Path, redis_db: RedisServer, greeter: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = f"{tmp_path}/none.sock"
    config = _config(
        tmp_path, redis_db.url, f'[lmtp]\nlisten = "unix:{greeter}"\n[milter]\nsocket = "unix:{gone}"\n'
    )
    code, out = _health(capsys, config, "--service", "lmtp")
    assert (code, out) == (0, f"BOUNCEKEEPER OK - store ok: answers; lmtp ok: unix:{greeter} answers\n")
    code, out = _health(capsys, config, "--service", "lmtp", "--service", "milter")
    assert code == 2
    assert f"milter critical: unix:{gone}:" in out
