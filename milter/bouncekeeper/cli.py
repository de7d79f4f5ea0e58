"""The command line: the composition root that wires config, core, store and adapters together.

Each subcommand is a small function taking the parsed arguments and the loaded settings; this module
is the only place that decides which concrete store or adapter a command uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence

from bouncekeeper import __version__, config, log

Handler = Callable[[argparse.Namespace, config.Settings], int]


def _cmd_config_check(args: argparse.Namespace, settings: config.Settings) -> int:
    for index, path in enumerate(settings.verp.secret_files):
        config.read_secret(path, f"verp.secret_files[{index}]", settings.source)
    print(f"{settings.source}: OK")
    if args.json:
        print(json.dumps(_as_dict(settings), indent=2, sort_keys=True))
    return 0


def _as_dict(settings: config.Settings) -> dict[str, object]:
    return dataclasses.asdict(settings)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(prog="bouncekeeper", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bouncekeeper {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML settings file (default: ${config.ENV_VAR}, else built-in defaults)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, Handler] = {}

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="load and validate the configuration, then exit")
    check.add_argument("--json", action="store_true", help="also print the effective settings")
    handlers["config"] = _cmd_config_check

    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"bouncekeeper: configuration error: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG (sysexits.h): what init systems and operators expect for a bad config
    log.setup(settings.log.level, settings.log.target, settings.log.facility)
    try:
        return handlers[args.command](args, settings)
    except config.ConfigError as exc:
        print(f"bouncekeeper: configuration error: {exc}", file=sys.stderr)
        return 78


if __name__ == "__main__":
    sys.exit(main())
