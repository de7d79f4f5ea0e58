"""The systemd units that ship with the package: valid for systemd itself, and run what the CLI has."""

from __future__ import annotations

import configparser
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from bouncekeeper import cli, packaged

DAEMONS = ("milter", "lmtp", "notify", "http")
TIMED = ("imap", "probes")
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "RuntimeDirectory": "bouncekeeper",
    "RuntimeDirectoryPreserve": "yes",
    "StateDirectory": "bouncekeeper",
    "User": "bouncekeeper",
}
INSTALLED = "/opt/bouncekeeper/bin/bouncekeeper"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((packaged.UNITS / name).read_text())
    return parser


def test_every_daemon_has_a_service_and_every_periodic_command_a_timer() -> None:
    names = {p.name for p in packaged.units()}
    assert {f"bouncekeeper-{d}.service" for d in DAEMONS} <= names
    assert {f"bouncekeeper-{t}.timer" for t in TIMED} <= names
    assert {f"bouncekeeper-{t}.service" for t in TIMED} <= names


@pytest.mark.parametrize("name", [f"bouncekeeper-{d}.service" for d in (*DAEMONS, *TIMED)])
def test_services_are_hardened_and_run_a_command_the_cli_has(name: str) -> None:
    service = _unit(name)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == value, f"{name}: {key}"
    command = service["ExecStart"]
    assert command.startswith(f"{INSTALLED} --config /etc/bouncekeeper/bouncekeeper.toml ")
    assert command.split()[3] in cli.COMMANDS
    if name.removeprefix("bouncekeeper-").removesuffix(".service") in DAEMONS:
        assert service["Restart"] == "always"
        assert service["RestartPreventExitStatus"] == "78"  # a config error is no crash to retry


@pytest.mark.parametrize("name", ["bouncekeeper-milter.service", "bouncekeeper-lmtp.service"])
def test_reload_sends_sighup_to_the_listeners(name: str) -> None:
    assert _unit(name)["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="scripts/sysdeps.sh installs systemd")
def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: pathlib.Path) -> None:
    # verify checks that each command exists: point the units at this venv's console script, which is
    # what `make install` puts in /opt/bouncekeeper/bin. Everything else is verified as shipped.
    executable = pathlib.Path(sys.prefix) / "bin" / "bouncekeeper"
    assert executable.exists(), "the venv's console script (make venv installs it)"
    for unit in packaged.units():
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, str(executable)))
    units = sorted(str(p) for p in tmp_path.iterdir())
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # Warnings (an unknown key, a bad value) leave the exit code at 0: there must be none at all.
    assert done.stdout + done.stderr == ""


def test_sample_config_prints_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sample-config"]) == 0
    out = capsys.readouterr().out
    assert out == (pathlib.Path(__file__).parent.parent / "bouncekeeper.toml.sample").read_text()


def test_sample_config_units_copies_them_and_never_overwrites(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "system"
    assert cli.main(["sample-config", "--units", str(target)]) == 0
    copied = sorted(p.name for p in target.iterdir())
    assert copied == sorted(p.name for p in packaged.units())
    edited = target / "bouncekeeper-milter.service"
    edited.write_text("# the operator's own\n")
    assert cli.main(["sample-config", "--units", str(target)]) == 73
    assert edited.read_text() == "# the operator's own\n"
    assert re.search(r"already there, nothing copied: .*bouncekeeper-\w+\.service", capsys.readouterr().err)
