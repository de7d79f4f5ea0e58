"""`bouncekeeper setup MTA [--apply] [--undo] [--backup-dir DIR]`: the command group around `plan`.

By default it prints the change as a diff and writes nothing. `--apply` first has the MTA check the staged
result, then writes with backups; `--undo` puts back what the backups hold, byte for byte. The chosen
MTA's module (`setup/exim.py` ...) is imported when the command runs.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path
from types import ModuleType

from bouncekeeper import config
from bouncekeeper.ops.setup import plan
from bouncekeeper.ops.setup.route import SetupError


def add_arguments(p: argparse.ArgumentParser) -> None:
    msub = p.add_subparsers(dest="setup_mta", required=True, metavar="MTA")
    exim = msub.add_parser("exim", help="Exim: Debian's conf.d layout or a single configuration file")
    exim.add_argument(
        "--exim-config",
        metavar="PATH",
        default="/etc/exim4",
        help="Debian's configuration folder or a single configuration file (default: %(default)s)",
    )
    exim.add_argument(
        "--exim", metavar="PATH", help="the exim binary for the check (default: exim4 or exim on PATH)"
    )
    exim.add_argument(
        "--update-exim4-conf", metavar="PATH", help="Debian's update-exim4.conf (default: found on PATH)"
    )
    postfix = msub.add_parser(
        "postfix", help="Postfix 3.x: milters, the bounce domain's transport and checks"
    )
    postfix.add_argument(
        "--config-dir",
        metavar="DIR",
        default="/etc/postfix",
        help="Postfix's configuration folder (default: %(default)s)",
    )
    postfix.add_argument("--reload", action="store_true", help="run `postfix reload` after --apply")
    postfix.add_argument(
        "--routed",
        action="store_true",
        help="no milter on the MX sessions: the policy service routes bounces ([milter] policy_socket)",
    )
    postfix.add_argument(
        "--app-service",
        metavar="NAME/TYPE",
        action="append",
        default=[],
        help="with --routed: a master.cf listener of the application that gets the milter (repeatable)",
    )
    sendmail = msub.add_parser(
        "sendmail", help="Sendmail: the operator's .mc, built and checked with m4 and -bt"
    )
    sendmail.add_argument(
        "--mc", metavar="PATH", default="/etc/mail/sendmail.mc", help="default: %(default)s"
    )
    sendmail.add_argument(
        "--cf", metavar="PATH", help="also write the built .cf there (default: no; Debian: sendmailconfig)"
    )
    sendmail.add_argument(
        "--cf-dir", metavar="PATH", help="sendmail-cf's cf folder (default: /usr/share/sendmail/cf if there)"
    )
    sendmail.add_argument("--sendmail", metavar="PATH", help="the sendmail binary for the -bt check")
    for mta in (exim, postfix, sendmail):
        _apply_and_undo_arguments(mta)


def _apply_and_undo_arguments(mta: argparse.ArgumentParser) -> None:
    """What every MTA's set-up takes: show (the default), --apply, --undo and where the backup goes."""
    mta.add_argument("--apply", action="store_true", help="check the staged result, then write it")
    mta.add_argument("--undo", action="store_true", help="restore the files a previous --apply changed")
    mta.add_argument(
        "--force",
        action="store_true",
        help="with --undo: restore even files edited after --apply wrote them (those edits are lost)",
    )
    mta.add_argument(
        "--backup-dir",
        metavar="DIR",
        help="where --apply keeps the originals (default: STATE_DIR/setup-MTA)",
    )


def command(args: argparse.Namespace, settings: config.Settings) -> int:
    name: str = args.setup_mta
    backup_dir = Path(args.backup_dir or Path(settings.state_dir) / f"setup-{name}")
    # Each MTA module offers command_plan(args, settings) -> (Plan, the MTA's verdict) and undo_notes(args).
    module = importlib.import_module(f"bouncekeeper.ops.setup.{name}")
    try:
        if args.undo:
            _undo(module, args, backup_dir)
            return 0
        change, verdict = module.command_plan(args, settings)
    except SetupError as exc:
        print(f"bouncekeeper setup {name}: {exc}", file=sys.stderr)
        return 1
    _show_or_apply(module, args, change, verdict, backup_dir)
    return 0


def _undo(module: ModuleType, args: argparse.Namespace, backup_dir: Path) -> None:
    if not (backup_dir / plan.MANIFEST).exists():
        raise SetupError(f"{backup_dir}: no backup of an earlier --apply to undo")
    try:
        touched = plan.undo(backup_dir, force=args.force)
    except plan.ChangedSinceApply as exc:
        raise SetupError(
            f"changed since --apply wrote them: {exc}; nothing restored, so your edits stay. The"
            f" originals are in {backup_dir}; --undo --force restores them and discards those edits"
        ) from exc
    for path in touched:
        print(f"restored {path}" if path.exists() else f"removed {path} (--apply created it)")
    for line in module.undo_notes(args):
        print(line)


def _show_or_apply(
    module: ModuleType, args: argparse.Namespace, change: plan.Plan, verdict: str, backup_dir: Path
) -> None:
    name: str = args.setup_mta
    if not change.changes:
        print(f"bouncekeeper setup {name}: nothing to change (already set up)")
        return
    sys.stdout.write(plan.diff(change))
    print(f"# {verdict}")
    if not args.apply:
        for note in change.notes:  # before the write too: DNS records take time to publish
            print(f"# {note}")
        print("# nothing written: run again with --apply to write these changes")
        return
    plan.apply(change, backup_dir)
    print(f"# written; the originals are in {backup_dir} (--undo restores them)")
    after_apply = getattr(module, "after_apply", None)  # an MTA that reloads on request (Postfix)
    if after_apply is not None:
        print(f"# {after_apply(args)}")
    for note in change.notes:
        print(f"# {note}")


def find(explicit: str | None, *names: str) -> str | None:
    """A program given on the command line, else the first of `names` on PATH."""
    if explicit:
        return explicit
    for candidate in names:
        found = shutil.which(candidate) or shutil.which(candidate, path="/usr/sbin:/usr/lib/sendmail")
        if found:
            return found
    return None
