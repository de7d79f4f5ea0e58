"""The milter daemon: `bouncekeeper milter`.

It checks the settings (every error a ConfigError naming file and key, before any socket is opened),
opens the milter socket in libmilter syntax, registers daemons/milter_adapter.py's `BounceMilter` with
libmilter, drops privileges to `[milter] user`, builds the runtime (the store, the service) and serves until
SIGTERM; SIGHUP re-reads the configuration and the VERP keys without a restart.

The routed Postfix set-up (postfix/routed/) runs the same milter behind the queue: the daemon also hosts a
policy service (`policyd`) that Postfix asks about the bounce domain and protected recipients only, and
the after-queue listener's daemon name (`after_queue_daemons`) makes that mail inbound and never refused.
"""

from __future__ import annotations

import gc
import grp
import importlib
import ipaddress
import os
import pathlib
import pwd
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import Milter

from bouncekeeper import config, log, verpkeys
from bouncekeeper.core import addresses
from bouncekeeper.core.routing import MilterRouting
from bouncekeeper.daemons import policyd
from bouncekeeper.daemons.milter_adapter import ACTIONS, BounceMilter, Runtime
from bouncekeeper.verpkeys import Signer

logger = log.get_logger("bouncekeeper.milterd")  # as before the folders: log filters use it
# pymilter's C extension `milter`. Imported by name: mypy would take our source root (the folder
# milter/, never a package) for it, and the extension ships no types anyway.
libmilter: Any = importlib.import_module("milter")

# -- the settings ------------------------------------------------------------------------------------


def routing_from_settings(settings: config.Settings) -> MilterRouting:
    """The milter's routing settings, parsed once at start-up; a ConfigError names file and key."""
    m, v = settings.milter, settings.verp
    networks = []
    for index, text in enumerate(m.originating_networks):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise config.ConfigError(
                settings.source, f"milter.originating_networks[{index}]", str(exc)
            ) from exc
    protected = set()
    for index, text in enumerate(m.protected_recipients):
        address = addresses.normalise(text)
        if address is None:
            raise config.ConfigError(
                settings.source, f"milter.protected_recipients[{index}]", f"not an address: {text!r}"
            )
        protected.add(address)
    return MilterRouting(
        bounce_domain=v.bounce_domain,
        local_prefix=v.local_prefix,
        senders=tuple(p.lower() for p in v.senders),
        multi_recipient=v.multi_recipient,
        context_header=v.context_header,
        originating_networks=tuple(networks),
        originating_daemons=frozenset(m.originating_daemons),
        internal_daemons=frozenset(m.internal_daemons),
        after_queue_daemons=frozenset(m.after_queue_daemons),
        protected_recipients=frozenset(protected),
        loop_action=m.loop_action,
        suppression=m.suppression,
        bounce_action=m.bounce_action,
        accept_early=m.accept_early,
        enforce=settings.policy.mode == "enforce",
    )


def check_settings(settings: config.Settings) -> tuple[MilterRouting, Signer | None]:
    """Everything the daemon would refuse at start-up, as a ConfigError naming file and key."""
    return routing_from_settings(settings), verpkeys.load_signer(settings)


def startup_lines(routing: MilterRouting, *, verp_on: bool) -> list[str]:
    """What the operator must read at start-up: which senders are rewritten, and the mode."""
    if not verp_on:
        verp_line = "VERP off: [verp] bounce_domain is empty, no sender is rewritten"
    elif not routing.senders:
        verp_line = "VERP off for outbound mail: [verp] senders lists no sender, no sender is rewritten"
    else:
        verp_line = "VERP for the senders matching " + ", ".join(routing.senders)
    if routing.enforce:
        mode_line = "mode=enforce: senders rewritten, bounces and loops dropped after they are recorded"
    else:
        mode_line = (
            "mode=observe: the mail flow is left unchanged; what enforce would do is recorded and"
            ' logged as "would ..." ([policy] mode = "enforce" acts on it)'
        )
    return [verp_line, mode_line]


def _log_startup(runtime: Runtime) -> None:
    for line in startup_lines(runtime.routing, verp_on=runtime.signer is not None):
        logger.info("%s", line)


def socket_spec(settings: config.Settings) -> str:
    """The socket in libmilter syntax; a relative unix path is made absolute (for the MTA's config)."""
    spec = settings.milter.socket or f"unix:{settings.state_dir}/milter.sock"
    path = socket_path(spec)
    return f"unix:{path.absolute()}" if path is not None else spec


def socket_path(spec: str) -> pathlib.Path | None:
    for prefix in ("unix:", "local:"):
        if spec.startswith(prefix):
            return pathlib.Path(spec[len(prefix) :])
    if spec.startswith("/"):
        return pathlib.Path(spec)
    return None


def recipient_routing(settings: config.Settings) -> policyd.RecipientRouting:
    routing = routing_from_settings(settings)
    return policyd.RecipientRouting(
        bounce_domain=routing.bounce_domain,
        protected_recipients=routing.protected_recipients,
        enforce=routing.enforce,
        filter=settings.milter.policy_filter,
    )


# -- libmilter and signals ---------------------------------------------------------------------------


def _register(timeout: int) -> None:
    """pymilter's runmilter, minus opensocket/main so that privileges can be dropped in between."""
    libmilter.set_connect_callback(Milter.connect_callback)
    libmilter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    libmilter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    libmilter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    libmilter.set_close_callback(Milter.close_callback)
    libmilter.set_flags(ACTIONS)
    if timeout:
        libmilter.settimeout(timeout)
    libmilter.register(
        "bouncekeeper",
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )


def _stop_on_signals() -> None:
    """Make SIGTERM and SIGINT stop libmilter cleanly, and SIGHUP reload, whichever thread the kernel picks.

    libmilter sigwait()s for them in its own thread but blocks them only in the thread that calls main();
    other threads (the embedded Redis supervisor) leave them unblocked, and a signal delivered there would
    kill the process by default action. Blocking them everywhere instead would be inherited by the
    redis-server child, which would then never see its own SIGTERM. So: a handler that does nothing but
    wake a thread through Python's wakeup fd, and that thread asks libmilter to stop (smfi_stop).
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda _signum, _frame: None)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def stopper() -> None:
        while (signum := os.read(read_end, 1)) == bytes([signal.SIGHUP]):
            _reload()
        logger.info("signal %s received, stopping", signum[0] if signum else "?")
        _stop_requested.set()
        libmilter.stop()

    threading.Thread(target=stopper, name="milter-stop", daemon=True).start()


_stop_requested = threading.Event()
# What SIGHUP runs, once the runtime exists (serve sets it).
_reloader: Callable[[], None] | None = None

# Settings a running daemon cannot take over on SIGHUP: its sockets, its user, its store connection.
RESTART_ONLY = (
    "state_dir", "redis", "milter.socket", "milter.socket_mode", "milter.user", "milter.pid_file",
    "milter.metrics_listen", "milter.policy_socket", "log.limited_burst", "log.limited_interval",
)  # fmt: skip


def _reload() -> None:
    """SIGHUP: re-read the configuration and the keys; on any error keep running on the current ones."""
    if _reloader is None:
        logger.warning("SIGHUP before the milter was ready: ignored")
        return
    try:
        _reloader()
    except config.ConfigError as exc:
        logger.error("SIGHUP: configuration error, the running configuration stays: %s", exc)
    except Exception as exc:  # noqa: BLE001 - a failed reload must never stop a running milter
        logger.error("SIGHUP: reload failed, the running configuration stays: %r", exc)


def reread(current: config.Settings) -> config.Settings:
    """The settings file read again, with the RESTART_ONLY keys kept as running (a warning says so)."""
    fresh, changed = config.reread(current, RESTART_ONLY)
    for key in changed:
        logger.warning("SIGHUP: %s changed: it takes effect at the next restart", key)
    return fresh


def reconfigured(runtime: Runtime, settings: config.Settings) -> Runtime:
    """A new runtime on the same store: routing, VERP signer and service built from `settings`."""
    routing, signer = check_settings(settings)
    return Runtime(routing, runtime.service.reconfigured(settings), signer)


def _install_reloader(settings: config.Settings, policy_server: policyd.PolicyServer | None) -> None:
    """Let SIGHUP swap in a runtime built from the file as it is now (key rotation without a restart)."""
    global _reloader  # noqa: PLW0603 - the signal thread's one entry point, set once the runtime exists
    running = [settings]

    def reload() -> None:
        fresh = reread(running[0])
        runtime = reconfigured(BounceMilter.runtime, fresh)
        log.set_level(fresh.log.level)
        # One assignment each: a new connection sees either the old runtime or the new one, never a mix.
        BounceMilter.runtime = runtime
        if policy_server is not None:
            policy_server.routing = recipient_routing(fresh)
            policy_server.check_rcpt = runtime.service.check_rcpt
        running[0] = fresh
        keys = runtime.signer.keyring.key_ids if runtime.signer is not None else ()
        logger.info("SIGHUP: configuration and keys re-read from %s (key ids %s)", fresh.source, keys)
        _log_startup(runtime)

    _reloader = reload


# -- serving -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Files:
    """What the daemon creates on disk and owns: its socket (when a unix one), state folder and pid file."""

    spec: str  # the socket in libmilter syntax
    path: pathlib.Path | None  # the unix socket's path; None for inet:
    mode: int  # of the unix sockets (milter and policy service)
    state_dir: pathlib.Path
    pid_file: pathlib.Path
    user: pwd.struct_passwd | None  # to run as, after the sockets are open

    @classmethod
    def create(cls, settings: config.Settings) -> _Files:
        """Resolve the paths and make their folders (as the user that starts the daemon)."""
        spec = socket_spec(settings)
        path = socket_path(spec)
        user = pwd.getpwnam(settings.milter.user) if settings.milter.user else None  # before any folder
        state_dir = pathlib.Path(settings.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        return cls(
            spec=spec,
            path=path,
            mode=int(settings.milter.socket_mode),
            state_dir=state_dir,
            pid_file=pathlib.Path(settings.milter.pid_file or state_dir / "milter.pid"),
            user=user,
        )


def _policy_server(settings: config.Settings, mode: int) -> policyd.PolicyServer | None:
    """The routed set-up's policy service, bound (not yet serving) when `[milter] policy_socket` is set."""
    if not settings.milter.policy_socket:
        return None
    return policyd.PolicyServer(
        settings.milter.policy_socket,
        recipient_routing(settings),
        mode=mode,
        limits=policyd.ConnectionLimits.from_settings(settings),
    )


def _open_socket(files: _Files, policy_server: policyd.PolicyServer | None) -> None:
    """Open the milter socket with the configured mode; on failure the policy service is closed too."""
    libmilter.setconn(files.spec)
    old_umask = os.umask(0o777 & ~files.mode)
    try:
        libmilter.opensocket(True)  # True: remove a stale socket left by a crash
    except BaseException:
        if policy_server is not None:
            policy_server.stop()
        raise
    finally:
        os.umask(old_umask)


def _settle(files: _Files, policy_server: policyd.PolicyServer | None) -> None:
    """Write the pid file, set the socket's mode, and become `[milter] user` (owner of what we made)."""
    files.pid_file.parent.mkdir(parents=True, exist_ok=True)
    files.pid_file.write_text(f"{os.getpid()}\n")
    if files.path is not None:
        os.chmod(files.path, files.mode)
    user = files.user
    if user is None:
        return
    sockets = [p for p in (files.path, policy_server.path if policy_server else None) if p is not None]
    for owned in [files.state_dir, files.pid_file, *sockets]:
        os.chown(owned, user.pw_uid, user.pw_gid)
    os.setgroups([g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)


def _run(
    settings: config.Settings, runtime: Runtime, policy_server: policyd.PolicyServer | None, spec: str
) -> None:
    """Install the runtime, start the policy service, and serve until SIGTERM or SIGINT."""
    BounceMilter.runtime = runtime
    Milter.factory = BounceMilter
    if policy_server is not None:
        policy_server.start(runtime.service.check_rcpt)
    _install_reloader(settings, policy_server)
    # Everything built so far (classifier tables, the store, modules) lives until exit: keep it out
    # of the cyclic collector's scans, which every connection's few objects would otherwise trigger.
    gc.freeze()
    _log_startup(runtime)
    logger.info("listening on %s (pid %d)", spec, os.getpid())
    try:
        libmilter.main()  # returns after smfi_stop (SIGTERM, SIGINT: see _stop_on_signals)
    except libmilter.error:
        if not _stop_requested.is_set():
            raise
        # Stopped before main() ran: libmilter refuses to start, which is what was asked.


def _clean_up(
    files: _Files, policy_server: policyd.PolicyServer | None, shutdown: Callable[[], None] | None
) -> None:
    logger.info("stopping")
    if policy_server is not None:
        policy_server.stop()
    if shutdown is not None:
        shutdown()
    for leftover in (files.pid_file, files.path):
        try:
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        except OSError as exc:
            # After dropping privileges, a folder the user may not write (keep the socket and the
            # pid file in one it owns, e.g. systemd's RuntimeDirectory); a stale socket is replaced
            # at the next start anyway.
            logger.warning("cannot remove %s: %s", leftover, exc.strerror)


def serve(settings: config.Settings, make_runtime: Callable[[], tuple[Runtime, Callable[[], None]]]) -> int:
    """Open the socket, drop privileges, build the runtime, run until SIGTERM; clean up."""
    files = _Files.create(settings)
    _stop_on_signals()  # first: a SIGTERM during start-up must still stop cleanly
    _register(timeout=0)
    # The policy service is bound before the milter socket (and so before the privilege drop): once the
    # milter socket exists, both listen, and requests wait in the backlog until the runtime is built.
    policy_server = _policy_server(settings, files.mode)
    _open_socket(files, policy_server)
    shutdown: Callable[[], None] | None = None
    try:
        _settle(files, policy_server)
        # The MTA's connections wait in the listen backlog until main() accepts them.
        runtime, shutdown = make_runtime()
        _run(settings, runtime, policy_server, files.spec)
    finally:
        _clean_up(files, policy_server, shutdown)
    return 0
