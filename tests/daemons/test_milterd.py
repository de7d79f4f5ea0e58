"""The milter daemon (daemons/milterd.py) as a real process: socket, pid file, embedded Redis, SIGTERM,
privilege drop, metrics listener, and the settings it refuses before opening its socket."""

from __future__ import annotations

import contextlib
import os
import pathlib
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time

import pytest
import redis

from bouncekeeper import cli
from bouncekeeper.core.routing import MilterRouting
from bouncekeeper.daemons import metrics, milterd
from tests.support.exim import free_port, wait_for_port
from tests.support.milter import MilterProcess
from tests.support.prometheus import samples, scrape
from tests.support.redis_server import RedisServer


def test_startup_says_which_senders_are_rewritten_and_what_observe_does() -> None:
    off = milterd.startup_lines(MilterRouting(senders=()), verp_on=True)
    assert "[verp] senders lists no sender, no sender is rewritten" in off[0]
    assert "mode=observe: the mail flow is left unchanged" in off[1]
    on = milterd.startup_lines(MilterRouting(senders=("app@example.org",), enforce=True), verp_on=True)
    assert on[0] == "VERP for the senders matching app@example.org"
    assert on[1].startswith("mode=enforce")
    assert "bounce_domain is empty" in milterd.startup_lines(MilterRouting(), verp_on=False)[0]


def test_daemon_with_metrics_listen_serves_metrics_and_nothing_else(redis_db: RedisServer) -> None:
    directory = pathlib.Path(tempfile.mkdtemp(prefix="bk-m-"))  # unix socket paths must stay short
    port = free_port()
    toml = f'[redis]\nurl = "{redis_db.url}"\n[milter]\nmetrics_listen = "127.0.0.1:{port}"\n'
    daemon = MilterProcess(directory, f"unix:{directory}/m.sock", toml, "metrics")
    try:
        daemon.start()
        wait_for_port(port, proc=daemon.proc)
        status, content_type, text = scrape(f"http://127.0.0.1:{port}/metrics")
        assert status == 200, daemon.log()
        assert content_type == metrics.CONTENT_TYPE
        assert "# TYPE bouncekeeper_decisions_total counter" in text
        assert "# TYPE bouncekeeper_store_seconds histogram" in text
        # Read from Redis at scrape time, as `bouncekeeper http` does.
        assert samples(text)['bouncekeeper_outbox_depth{stream="outbox"}'] == 0
        assert scrape(f"http://127.0.0.1:{port}/")[0] == 404
        assert scrape(f"http://127.0.0.1:{port}/metrics/x")[0] == 404
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_daemon_opens_its_socket_writes_a_pid_file_and_stops_cleanly_on_sigterm(
    tmp_path: pathlib.Path,
) -> None:
    # [redis] url empty: the daemon runs its own embedded redis-server under state_dir, as `make run` does.
    directory = pathlib.Path(tempfile.mkdtemp(prefix="bk-d-"))  # unix socket paths must stay short
    try:
        # embedded_as_root: the suite runs as root, as `make run` may (contrib/dev.toml).
        toml = '[redis]\nembedded_as_root = true\n[milter]\nsocket_mode = "0640"\n'
        daemon = MilterProcess(directory, f"unix:{directory}/m.sock", toml, "d")
        daemon.config.write_text(daemon.config.read_text().replace('socket_mode = "0666"\n', "", 1))
        daemon.start()
        assert daemon.path is not None
        assert stat.S_IMODE(daemon.path.stat().st_mode) == 0o640
        pid_file = daemon.state_dir / "milter.pid"
        assert pid_file.read_text().strip() == str(daemon.proc.pid if daemon.proc else "")
        deadline = time.monotonic() + 10  # the embedded redis-server starts after the socket opens
        while not (daemon.state_dir / "redis" / "redis.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (daemon.state_dir / "redis" / "redis.sock").exists()
        assert daemon.terminate() == 0
        assert not daemon.path.exists()
        assert not pid_file.exists()
        assert "listening on" in daemon.log()
    finally:
        daemon.stop()
        # A daemon killed by a failing test leaves its embedded redis-server (own session) running.
        embedded = daemon.state_dir / "redis" / "redis.sock"
        if embedded.exists():
            with contextlib.suppress(redis.RedisError):
                redis.Redis(unix_socket_path=str(embedded)).shutdown(nosave=True)
        shutil.rmtree(directory, ignore_errors=True)


def test_daemon_refuses_a_bad_config_before_opening_the_socket(tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[milter]\noriginating_networks = ["10.0.0.0/33"]\n')
    done = subprocess.run(
        [sys.executable, "-m", "bouncekeeper.cli", "--config", str(cfg), "milter"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[2] / "milter")},
        timeout=30,
        check=False,
    )
    assert done.returncode == 78
    assert "milter.originating_networks[0]" in done.stderr


def test_config_check_refuses_what_the_milter_would_refuse(tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[milter]\nprotected_recipients = ["not an address"]\n')
    assert cli.main(["--config", str(cfg), "config", "check"]) == 78
    cfg.write_text('[milter]\nsocket_mode = "rw-rw----"\n')
    assert cli.main(["--config", str(cfg), "config", "check"]) == 78
    cfg.write_text('[verp]\nbounce_domain = "b.example"\n')  # VERP on, but no key
    assert cli.main(["--config", str(cfg), "config", "check"]) == 78


def _readable_by_others(path: pathlib.Path) -> bool:
    return all(p.stat().st_mode & 0o005 == 0o005 for p in (path, *path.parents) if p.exists())


@pytest.mark.skipif(
    os.geteuid() != 0 or not _readable_by_others(pathlib.Path(sysconfig.get_paths()["stdlib"])),
    reason="needs root, and a Python whose standard library the unprivileged user can read",
)
def test_daemon_drops_privileges_to_the_configured_user(redis_db: RedisServer) -> None:
    directory = pathlib.Path(tempfile.mkdtemp(prefix="bk-u-"))
    directory.chmod(0o755)
    os.chown(directory, pwd.getpwnam("nobody").pw_uid, -1)  # the user's own folder, as in deployment
    policy = directory / "p.sock"  # the routed set-up's policy service: bound before the drop as well
    toml = f'[redis]\nurl = "{redis_db.url}"\n[milter]\nuser = "nobody"\npolicy_socket = "unix:{policy}"\n'
    daemon = MilterProcess(directory, f"unix:{directory}/m.sock", toml, "u")
    try:
        daemon.start()
        assert daemon.proc is not None
        deadline = time.monotonic() + 10
        status = ""
        while "nobody" not in status and time.monotonic() < deadline:
            uid = pathlib.Path(f"/proc/{daemon.proc.pid}/status").read_text().split("Uid:")[1].split()[0]
            status = pwd.getpwuid(int(uid)).pw_name
            time.sleep(0.05)
        assert status == "nobody"
        assert daemon.path is not None
        assert daemon.path.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert policy.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(policy))
            client.sendall(b"request=smtpd_access_policy\nrecipient=x@example.org\n\n")
            assert client.makefile("rb").readline() == b"action=DUNNO\n"
        assert daemon.terminate() == 0
        assert not policy.exists()
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)
