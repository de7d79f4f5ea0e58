"""`bouncekeeper setup postfix`: read Postfix's configuration with postconf, merge, check the result.

The merge itself is `postfix_merge.build` (pure); this module runs `postconf` to read what is there and
`postfix check` on a staged copy of the merged files (`setup/command.py` calls `command_plan` before it
shows or writes anything), and reloads Postfix after `--apply` only when `--reload` asks for it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from bouncekeeper import config
from bouncekeeper.daemons import milterd
from bouncekeeper.ops.setup import plan, postfix_merge
from bouncekeeper.ops.setup.route import SetupError, from_settings


def _postconf(config_dir: Path, *args: str) -> dict[str, str]:
    """`postconf -c DIR ARGS` as name -> value (its `name = value` lines)."""
    done = subprocess.run(
        ["postconf", "-c", str(config_dir), *args], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise SetupError(f"postconf -c {config_dir} {' '.join(args)}: {done.stderr.strip()}")
    values: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip()
    return values


def read_current(config_dir: Path) -> postfix_merge.Current:
    """What Postfix has in `config_dir`, read as Postfix reads it."""
    fields = _postconf(config_dir, "-F", "*/*/chroot", "*/*/command")
    services = []
    for key, command in fields.items():
        name, kind, field = key.rsplit("/", 2)
        if field == "command":
            chroot = fields.get(f"{name}/{kind}/chroot", "n")
            services.append(postfix_merge.Service(name, kind, chroot == "y", command))
    return postfix_merge.Current(
        config_dir=config_dir,
        main_cf=plan.read(config_dir / "main.cf"),
        master_cf=plan.read(config_dir / "master.cf"),
        raw=_postconf(config_dir, *postfix_merge.READ),
        expanded=_postconf(config_dir, "-x", *postfix_merge.READ),
        services=tuple(services),
        tables={name: plan.read(config_dir / name) for name in postfix_merge.TABLES},
    )


def wanted_from(settings: config.Settings, args: argparse.Namespace) -> postfix_merge.Wanted:
    route = from_settings(settings)
    if args.app_service and not args.routed:
        raise SetupError("--app-service goes with --routed (inline, every listener has the milter)")
    return postfix_merge.Wanted(
        source=os.path.abspath(settings.source),
        bounce_domain=route.bounce_domain,
        local_prefix=route.prefix,
        milter_socket=milterd.socket_spec(settings),
        lmtp_listen=settings.lmtp.listen,
        routed=args.routed,
        policy_socket=settings.milter.policy_socket,
        policy_filter=settings.milter.policy_filter,
        protected=route.protected,
        app_services=tuple(args.app_service),
    )


def _run_postfix(config_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """postfix prints its errors only to a terminal (else to syslog): give it one when `script` exists."""
    argv = ["postfix", "-c", str(config_dir), *args]
    if shutil.which("script"):
        argv = ["script", "-qec", shlex.join(argv), "/dev/null"]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def check_staged(change: plan.Plan, config_dir: Path) -> None:
    """`postfix check` on a copy of `config_dir` holding the merged files: nothing real is written."""
    with tempfile.TemporaryDirectory(prefix="bouncekeeper-postfix-") as tmp:
        staged = Path(tmp) / "etc"
        shutil.copytree(config_dir, staged, symlinks=True)
        for edit in change.edits:
            (staged / edit.path.name).write_bytes(edit.after)
        done = _run_postfix(staged, "check")
        if done.returncode != 0:
            raise SetupError(f"postfix check refuses the merged configuration:\n{done.stdout}{done.stderr}")


def command_plan(args: argparse.Namespace, settings: config.Settings) -> tuple[plan.Plan, str]:
    """The plan for the configuration at --config-dir, checked by `postfix check` when it changes."""
    config_dir = Path(args.config_dir)
    change = postfix_merge.build(read_current(config_dir), wanted_from(settings, args))
    if change.changes:
        check_staged(change, config_dir)
    return change, f"postfix check accepts the staged configuration (postfix -c {config_dir})"


def after_apply(args: argparse.Namespace) -> str:
    """Reload only when asked: the operator picks the moment (and starts bouncekeeper's daemons first)."""
    if not args.reload:
        return f"Postfix not reloaded: run `postfix -c {args.config_dir} reload` when ready (or add --reload)"
    done = _run_postfix(Path(args.config_dir), "reload")
    if done.returncode != 0:
        return f"postfix reload failed (the files are written): {done.stdout}{done.stderr}".strip()
    return "Postfix reloaded"


def undo_notes(args: argparse.Namespace) -> list[str]:
    return [f"# Postfix not reloaded: run `postfix -c {args.config_dir} reload`"]
