"""The files that ship inside the package: the sample config, the systemd units and the MTA files.

They live in the repository's top folders (bouncekeeper.toml.sample, contrib/, postfix/, sendmail/,
exim/); `share/` links to them, and a built wheel carries copies, so an installed bouncekeeper (no
checkout) can hand them to the operator: `bouncekeeper sample-config` prints the sample,
`bouncekeeper sample-config --units DIR` copies the systemd units into DIR.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

from bouncekeeper import config

SHARE = pathlib.Path(__file__).resolve().parent / "share"
SAMPLE = SHARE / "bouncekeeper.toml.sample"
UNITS = SHARE / "contrib"


def units() -> list[pathlib.Path]:
    """The systemd units: services and timers."""
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer"))


def install_units(directory: pathlib.Path) -> list[pathlib.Path]:
    """Copy the units into `directory`; a file already there is never overwritten (the operator's own
    edits win): any such file stops the copy before anything is written."""
    targets = [(unit, directory / unit.name) for unit in units()]
    existing = [target for _unit, target in targets if target.exists()]
    if existing:
        raise FileExistsError(", ".join(str(t) for t in existing))
    directory.mkdir(parents=True, exist_ok=True)
    for unit, target in targets:
        shutil.copyfile(unit, target)
    return [target for _unit, target in targets]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--units",
        metavar="DIR",
        type=pathlib.Path,
        help="copy the systemd units (milter, lmtp, notify, http; imap and probes timers) into DIR"
        " instead, e.g. /etc/systemd/system; files already there are left alone and reported",
    )


def command(args: argparse.Namespace, settings: config.Settings) -> int:
    if args.units is None:
        sys.stdout.write(SAMPLE.read_text(encoding="utf-8"))
        return 0
    try:
        written = install_units(args.units)
    except FileExistsError as exc:
        sys.stderr.write(f"bouncekeeper: already there, nothing copied: {exc}\n")
        return 73  # EX_CANTCREAT (sysexits.h)
    sys.stdout.writelines(f"{path}\n" for path in written)
    return 0
