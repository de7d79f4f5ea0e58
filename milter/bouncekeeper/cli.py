"""The command line: the composition root that wires config, core, store and adapters together.

Each subcommand is a small function taking the parsed arguments and the loaded settings; this module
is the only place that decides which concrete store or adapter a command uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bouncekeeper import __version__, config, log
from bouncekeeper.tomlschema import FileMode

if TYPE_CHECKING:
    from bouncekeeper import verpkeys
    from bouncekeeper.store import Store

# Nothing else of the package is imported here: each command imports what it uses when it runs, so that
# `bouncekeeper classify` (or a pipe that starts one process per bounce) never pays for redis, asyncio or
# the HTTP server (docs/classify-cost.md, "Start-up"). tests/test_cli_imports.py checks it.

Handler = Callable[[argparse.Namespace, config.Settings], int]


def _cmd_config_check(args: argparse.Namespace, settings: config.Settings) -> int:
    for index, path in enumerate(settings.verp.secret_files):
        config.read_secret(path, f"verp.secret_files[{index}]", settings.source)
    for index, target in enumerate(settings.notify.targets):
        config.read_secret(target.secret_file, f"notify.targets[{index}].secret_file", settings.source)
    if settings.http.token_file:
        config.read_secret(settings.http.token_file, "http.token_file", settings.source)
    from bouncekeeper.daemons import milterd  # noqa: PLC0415 - lazily: see the imports above

    milterd.check_settings(settings)  # networks, addresses, socket mode: what `milter` would refuse
    print(f"{settings.source}: OK")
    if args.json:
        print(json.dumps(_as_dict(settings), indent=2, sort_keys=True))
    return 0


def _cmd_milter(args: argparse.Namespace, settings: config.Settings) -> int:
    from bouncekeeper import store  # noqa: PLC0415 - lazily: see the imports above
    from bouncekeeper.daemons import milter_adapter, milterd  # noqa: PLC0415 - lazily: see the imports above
    from bouncekeeper.service import bounces  # noqa: PLC0415 - lazily: see the imports above

    # A relative state_dir (contrib/dev.toml's ".state") is taken from the current folder, once: the
    # embedded redis-server changes its own folder and would resolve it again from there.
    settings = dataclasses.replace(settings, state_dir=os.path.abspath(settings.state_dir))
    # Everything that can be wrong in the config fails here, before the socket is opened.
    routing, signer = milterd.check_settings(settings)

    def make_runtime() -> tuple[milter_adapter.Runtime, Callable[[], None]]:
        # After the privileges are dropped: an embedded redis-server runs as the milter's user.
        st = store.connect(settings, supervise=True)
        try:
            stop_metrics = _serve_metrics(settings, "milter", st)
        except config.ConfigError:
            st.close()  # an embedded redis-server must not outlive a refused start
            raise

        def shutdown() -> None:
            stop_metrics()
            st.close()

        return milter_adapter.Runtime(routing, bounces.Service(settings, st), signer), shutdown

    return milterd.serve(settings, make_runtime)


def _serve_metrics(settings: config.Settings, section: str, st: Store) -> Callable[[], None]:
    """Start `GET /metrics` when `[section] metrics_listen` is set; returns what stops it."""
    from bouncekeeper.daemons import metrics  # noqa: PLC0415 - lazily: see the imports above
    from bouncekeeper.store import Outbox  # noqa: PLC0415

    listen: str = getattr(settings, section).metrics_listen
    if not listen:
        return lambda: None

    def refresh() -> None:
        # What lives in Redis, read at scrape time as `bouncekeeper http` does (the notifier's counts).
        outbox = Outbox(st)
        for stream, depth in outbox.depth().items():
            metrics.OUTBOX_DEPTH.set(depth, stream)
        counts = outbox.delivery_counts()
        metrics.NOTIFICATIONS.collect_with(lambda: counts)
        opened = st.counters().get("breaker:opened", 0)
        metrics.BREAKERS_OPENED.collect_with(lambda: [((), opened)])

    try:
        server = metrics.serve(listen, refresh)
    except OSError as exc:
        raise config.ConfigError(
            settings.source, f"{section}.metrics_listen", f"cannot listen on {listen}: {exc.strerror}"
        ) from exc

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop


def _as_dict(settings: config.Settings) -> dict[str, object]:
    # Permissions as the config writes them ("0660"), not as the number JSON would show (432).
    return dataclasses.asdict(
        settings,
        dict_factory=lambda items: {k: f"{v:04o}" if isinstance(v, FileMode) else v for k, v in items},
    )


def _cmd_verp(args: argparse.Namespace, settings: config.Settings) -> int:
    from bouncekeeper import verpkeys  # noqa: PLC0415 - lazily: see the imports above
    from bouncekeeper.core import verp  # noqa: PLC0415

    keyring = verpkeys.load_keyring(settings)
    if args.verp_command == "keyid":
        print(json.dumps({"signing_key_id": keyring.signing_key_id, "key_ids": list(keyring.key_ids)}))
        return 0
    signer = verpkeys.Signer(keyring, verpkeys.require_bounce_domain(settings), settings.verp.local_prefix)
    if args.verp_command == "encode" and args.address == "-":
        # Without --day the clock runs on: a long list signs each recipient with its own day.
        return _encode_stream(signer if args.day is None else _on_day(signer, args.day), args.context)
    if args.verp_command == "encode":
        # One day for the address and the "day" printed beside it, even across midnight.
        signer = _on_day(signer, verpkeys.today() if args.day is None else args.day)
        try:
            address = signer.address_for(args.address, args.context)
        except verp.VerpUnencodable as exc:
            print(f"bouncekeeper: {exc}", file=sys.stderr)
            return 65  # EX_DATAERR (sysexits.h)
        out = {
            "address": address,
            "context": args.context,
            "day": signer.today(),
            "key_id": keyring.signing_key_id,
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    today = verpkeys.today() if args.today is None else args.today
    result = verpkeys.decode_with(args.address, keyring, settings, day=today)
    print(json.dumps(dataclasses.asdict(result), ensure_ascii=False))
    return 0 if result.status is verp.VerpStatus.VALID else 1


def _on_day(signer: verpkeys.Signer, day: int) -> verpkeys.Signer:
    """`signer` with its clock stopped on `day` (days since the epoch)."""
    from bouncekeeper import verpkeys  # noqa: PLC0415 - lazily: see the imports above

    return dataclasses.replace(signer, clock=lambda: day * verpkeys.SECONDS_PER_DAY)


def _encode_stream(signer: verpkeys.Signer, context: str) -> int:
    """`verp encode -`: a recipient a line on stdin (optionally TAB and its own context), a JSON line out
    for each, in order: {"recipient", "address"} or {"recipient", "error"}. Exit 65 if any failed.

    Through a pipe the output is block-buffered (a million recipients a run); a caller that waits for
    each answer before it writes the next recipient should sign in-process instead (docs/verp-spec.md).
    """

    from bouncekeeper.core import verp  # noqa: PLC0415 - lazily: see the imports above

    if isinstance(sys.stdin, io.TextIOWrapper):
        # A line that is not UTF-8 is answered as unencodable (its bytes kept as surrogates, which no
        # VERP address carries) instead of ending the run with a traceback halfway through a list.
        sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
    failed = 0
    write = sys.stdout.write
    for line in sys.stdin:
        recipient, tab, own_context = line.rstrip("\r\n").partition("\t")
        if not recipient.strip():
            continue
        try:
            address = signer.address_for(recipient, own_context if tab else context)
        except verp.VerpUnencodable as exc:
            failed += 1
            # ASCII JSON: such a line may hold those surrogates, which only a \\u escape can carry.
            write(json.dumps({"recipient": recipient, "error": str(exc)}) + "\n")
            continue
        write(json.dumps({"recipient": recipient, "address": address}, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 65 if failed else 0  # EX_DATAERR (sysexits.h), as for one address


def _cmd_lmtp(args: argparse.Namespace, settings: config.Settings) -> int:
    # Imported here: aiosmtpd and the store are needed by this command only.
    from bouncekeeper import verpkeys  # noqa: PLC0415
    from bouncekeeper.daemons import lmtpd  # noqa: PLC0415
    from bouncekeeper.service.bounces import Service  # noqa: PLC0415

    verpkeys.require_bounce_domain(settings)
    service = Service.open(settings, supervise=True)
    try:
        stop_metrics = _serve_metrics(settings, "lmtp", service.store)
        try:
            return lmtpd.run(service, settings)
        finally:
            stop_metrics()
    finally:
        service.close()


def _define_config(p: argparse.ArgumentParser) -> Handler:
    csub = p.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="load and validate the configuration, then exit")
    check.add_argument("--json", action="store_true", help="also print the effective settings")
    return _cmd_config_check


def _define_verp(p: argparse.ArgumentParser) -> Handler:
    vsub = p.add_subparsers(dest="verp_command", required=True)
    enc = vsub.add_parser("encode", help="print the signed VERP address of a recipient (JSON)")
    enc.add_argument(
        "address",
        help='a recipient, or "-": one recipient a line from stdin (optionally TAB and its context), one'
        " JSON line out for each",
    )
    enc.add_argument("--context", default="", help="context tag ([a-z0-9][a-z0-9._-]*), e.g. a newsletter id")
    enc.add_argument("--day", type=int, help="days since the epoch (default: today, UTC)")
    dec = vsub.add_parser("decode", help="verify a VERP address (JSON; exit 0 only when valid)")
    dec.add_argument("address")
    dec.add_argument("--today", type=int, help="days since the epoch (default: today, UTC)")
    vsub.add_parser("keyid", help="print the key ids (the signing one first), e.g. for an Exim config")
    return _cmd_verp


def _define_in(module: str) -> Callable[[argparse.ArgumentParser], Handler]:
    """A command whose module has `add_arguments(parser)` and `command(args, settings)`, imported only
    when the command is chosen."""

    def define(p: argparse.ArgumentParser) -> Handler:
        implementation = importlib.import_module(module)
        implementation.add_arguments(p)
        handler: Handler = implementation.command
        return handler

    return define


def _define_man(p: argparse.ArgumentParser) -> Handler:
    # The page is made from this module's parser; ops sits below cli, so cli hands the parser down.
    from bouncekeeper.ops import manpage  # noqa: PLC0415 - lazily: see the imports above

    manpage.add_arguments(p)

    def run(args: argparse.Namespace, settings: config.Settings) -> int:
        parser, _handlers = build_parser()
        sys.stdout.write(manpage.render(parser, args.date))
        return 0

    return run


def _define_classify(p: argparse.ArgumentParser) -> Handler:
    from bouncekeeper.ops import classify_command  # noqa: PLC0415 - lazily: see the imports above

    classify_command.add_arguments(p)
    return classify_command.run


def _define_admin(name: str) -> Callable[[argparse.ArgumentParser], Handler]:
    def define(p: argparse.ArgumentParser) -> Handler:
        from bouncekeeper.service import admin  # noqa: PLC0415 - lazily: it imports the store

        return admin.define(name, p)

    return define


def _no_arguments(handler: Handler) -> Callable[[argparse.ArgumentParser], Handler]:
    return lambda p: handler


# The operator's commands on the bounce state (admin.py), named here so that listing them imports nothing.
_ADMIN_HELP = {
    "show": "an address: state, scores, time left before each counter resets, last events",
    "list": "tracked addresses (any counter or a disabled state)",
    "enable": "re-enable an address: state active, counters reset, audit event",
    "disable": "disable an address (by an admin, or on the user's request)",
    "reset": "reset an address's counters (its state is kept), with an audit event",
    "stats": "addresses by state, events by kind, open circuit breakers",
    "export": "the suppression list (every disabled address) as CSV (default) or JSON",
    "record": "record a failure reply your application got when submitting mail",
    "ingest": "classify and record messages from files, mbox files or maildirs",
}

# Every subcommand: its help line and what defines its arguments and returns its handler. Only the chosen
# command's definition runs (and imports its module); `bouncekeeper --help` needs the help lines only.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Handler]]] = {
    "config": ("configuration tools", _define_config),
    "notify": (
        "deliver state-change webhooks from the outbox (runs until stopped)",
        _define_in("bouncekeeper.daemons.notify"),
    ),
    "http": (
        "serve the HTTP API, /metrics and the admin page (runs until stopped)",
        _define_in("bouncekeeper.daemons.httpd"),
    ),
    "probes": (
        "probe messages to addresses disabled by bounces (for cron)",
        _define_in("bouncekeeper.daemons.probes"),
    ),
    "imap": ("scan an IMAP folder for bounces once (for cron)", _define_in("bouncekeeper.daemons.imap")),
    "verp": ("signed VERP addresses ([verp] keys)", _define_verp),
    "lmtp": ("run the LMTP (and SMTP) listener for bounces ([lmtp] settings)", _no_arguments(_cmd_lmtp)),
    "classify": ("classify message files (bounce, delay, auto-reply ...)", _define_classify),
    **{name: (text, _define_admin(name)) for name, text in _ADMIN_HELP.items()},
    "import": (
        "import a suppression list (CSV, export JSON, Mailman 3, ESP exports); a second run changes nothing",
        _define_in("bouncekeeper.ops.importer"),
    ),
    "report": (
        "what happened and what enforce would do or did: bounces by kind, reason, domain; breakers; backlog",
        _define_in("bouncekeeper.service.report"),
    ),
    "setup": (
        "merge bouncekeeper into an MTA's configuration: a diff; --apply writes it, --undo reverts it",
        _define_in("bouncekeeper.ops.setup.command"),
    ),
    "milter": (
        "run the milter daemon (Postfix smtpd_milters, Sendmail INPUT_MAIL_FILTER)",
        _no_arguments(_cmd_milter),
    ),
    "health": (
        "check the store, the daemons' sockets and the outbox, for monitoring (Nagios exit codes)",
        _define_in("bouncekeeper.ops.health"),
    ),
    "man": (
        "print the bouncekeeper(1) manual page (roff), made from this parser",
        _define_man,
    ),
    "sample-config": (
        "print the sample configuration, or copy the systemd units into a folder (--units DIR)",
        _define_in("bouncekeeper.packaged"),
    ),
}


def build_parser(
    only: str | None = None, *, names_only: bool = False
) -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The parser and the handlers of every command, or of the command `only` (the others are listed with
    their help line but take no arguments); `names_only`: no command's arguments at all, to find which
    command a command line names without importing anything."""
    parser = argparse.ArgumentParser(prog="bouncekeeper", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bouncekeeper {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML settings file (default: ${config.ENV_VAR}, else {config.DEFAULT_PATH} if it exists,"
        " else built-in defaults)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, Handler] = {}
    for name, (text, define) in COMMANDS.items():
        defined = not names_only and only in (None, name)
        # An undefined command takes no -h of its own: `COMMAND -h` reaches the second parse, where
        # COMMAND is defined.
        p = sub.add_parser(name, help=text, description=text, add_help=defined)
        if defined:
            handlers[name] = define(p)
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Two parses: the first finds the command's name (and answers --help / --version); the second
    # defines that command alone, importing only its module.
    probe, _ = build_parser(names_only=True)
    chosen = probe.parse_known_args(argv)[0].command
    parser, handlers = build_parser(chosen)
    args = parser.parse_args(argv)
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"bouncekeeper: configuration error: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG (sysexits.h): what init systems and operators expect for a bad config
    log.setup(
        settings.log.level,
        settings.log.target,
        settings.log.facility,
        burst=settings.log.limited_burst,
        interval=settings.log.limited_interval,
    )
    try:
        return handlers[args.command](args, settings)
    except config.ConfigError as exc:
        print(f"bouncekeeper: configuration error: {exc}", file=sys.stderr)
        return 78


if __name__ == "__main__":
    sys.exit(main())
