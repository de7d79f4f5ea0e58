"""The command line: the composition root that wires config, core, store and adapters together.

Each subcommand is a small function taking the parsed arguments and the loaded settings; this module
is the only place that decides which concrete store or adapter a command uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence

import redis

from bouncekeeper import __version__, config, log, notify

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


def _notify_redis(settings: config.Settings) -> redis.Redis:
    # XREADGROUP blocks up to notify.poll seconds: the socket timeout must outlast it.
    if not settings.redis.url:
        raise config.ConfigError(
            settings.source, "redis.url", "the notifier needs the address of the store's Redis"
        )
    return redis.Redis.from_url(
        settings.redis.url,
        socket_timeout=max(settings.redis.socket_timeout, settings.notify.poll + 5),
        socket_connect_timeout=settings.redis.connect_timeout,
    )


def _cmd_notify(args: argparse.Namespace, settings: config.Settings) -> int:
    client = _notify_redis(settings)
    prefix = settings.redis.prefix
    if args.notify_command == "dead-letters":
        if args.action == "list":
            letters = notify.list_dead(client, prefix, count=args.limit)
            print(notify.as_json(letters) if args.json else notify.format_dead(letters))
            return 0
        ids = None if args.all else args.ids
        if not args.all and not args.ids:
            print("bouncekeeper: name the dead letters to replay, or --all", file=sys.stderr)
            return 64  # EX_USAGE
        new = notify.replay(client, prefix, ids)
        print(f"replayed {len(new)} notification(s) into the outbox")
        return 0
    if not settings.notify.targets:
        raise config.ConfigError(settings.source, "notify.targets", "no targets: nothing to deliver to")
    notifier = notify.Notifier.from_settings(client, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    notifier.run(stop)
    return 0


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

    p = sub.add_parser("notify", help="deliver state-change webhooks from the outbox (runs until stopped)")
    nsub = p.add_subparsers(dest="notify_command")
    dead = nsub.add_parser("dead-letters", help="list or replay notifications that could not be delivered")
    dead.add_argument("action", choices=("list", "replay"))
    dead.add_argument("ids", nargs="*", help="dead-letter ids to replay")
    dead.add_argument("--all", action="store_true", help="replay every dead letter")
    dead.add_argument("--limit", type=int, default=1000, help="list at most this many (default 1000)")
    dead.add_argument("--json", action="store_true", help="list as JSON")
    handlers["notify"] = _cmd_notify

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
