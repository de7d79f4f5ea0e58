"""`bouncekeeper health`: one line (or JSON) for monitoring, with the exit codes of a Nagios plugin.

Checks, each OK, WARNING or CRITICAL; the worst decides the exit code (0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN when the check itself could not run):
- the store answers a PING (the embedded server is only looked for, never started);
- each daemon named with --service accepts a connection on its socket (the LMTP listener must greet
  with 220);
- with notify targets configured, the outbox backlog (entries no notifier has delivered yet) and the
  dead letters stay under the given limits.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from dataclasses import asdict, dataclass

from bouncekeeper import config
from bouncekeeper.store import Outbox, attach

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
SERVICES = ("milter", "lmtp", "policy", "http")
TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    status: int
    detail: str
    value: int | None = None


def _connect(spec: str) -> socket.socket:
    """A connection to a socket in any of the config's spellings: unix:/path, local:/path, /path,
    inet:PORT@HOST (libmilter), HOST:PORT."""
    for prefix in ("unix:", "local:", ""):
        if spec.startswith(prefix + "/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(TIMEOUT)
            sock.connect(spec[len(prefix) :])
            return sock
    if spec.startswith("inet:"):
        port, _, host = spec.removeprefix("inet:").partition("@")
    else:
        host, _, port = spec.rpartition(":")
    return socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=TIMEOUT)


def _socket_of(service: str, settings: config.Settings) -> str:
    if service == "milter":
        return settings.milter.socket or f"unix:{settings.state_dir}/milter.sock"
    if service == "lmtp":
        return settings.lmtp.listen
    if service == "policy":
        return settings.milter.policy_socket
    return settings.http.listen


def check_service(service: str, settings: config.Settings) -> Check:
    spec = _socket_of(service, settings)
    if not spec:
        return Check(service, CRITICAL, "no socket configured")
    try:
        with _connect(spec) as sock:
            if service == "lmtp":
                greeting = sock.recv(512)
                if not greeting.startswith(b"220"):
                    return Check(service, CRITICAL, f"{spec}: greeted {greeting[:40]!r}")
    except (OSError, ValueError) as exc:
        return Check(service, CRITICAL, f"{spec}: {exc}")
    return Check(service, OK, f"{spec} answers")


def _limit(name: str, value: int, warn: int, crit: int) -> Check:
    status = CRITICAL if value >= crit else WARNING if value >= warn else OK
    return Check(name, status, f"{value} (warning at {warn}, critical at {crit})", value)


def run_checks(args: argparse.Namespace, settings: config.Settings) -> list[Check]:
    checks: list[Check] = []
    try:
        st = attach(settings)
        try:
            st.ping()
            checks.append(Check("store", OK, "answers"))
            if settings.notify.targets:
                outbox = Outbox(st)
                checks.append(_limit("outbox", outbox.backlog(), args.outbox_warn, args.outbox_crit))
                dead = outbox.depth()["dead"]
                checks.append(_limit("dead-letters", dead, args.dead_warn, args.dead_crit))
        finally:
            st.close()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the store is what this check reports
        checks.append(Check("store", CRITICAL, f"unreachable: {exc}"))
    checks.extend(check_service(service, settings) for service in args.service)
    return checks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service",
        action="append",
        default=[],
        choices=SERVICES,
        help="also check that this daemon's socket answers (repeatable)",
    )
    parser.add_argument("--outbox-warn", type=int, default=1_000, metavar="N", help="(default: 1000)")
    parser.add_argument("--outbox-crit", type=int, default=10_000, metavar="N", help="(default: 10000)")
    parser.add_argument("--dead-warn", type=int, default=1, metavar="N", help="(default: 1)")
    parser.add_argument("--dead-crit", type=int, default=100, metavar="N", help="(default: 100)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")


def command(args: argparse.Namespace, settings: config.Settings) -> int:
    try:
        checks = run_checks(args, settings)
    except Exception as exc:  # noqa: BLE001 - a monitoring plugin answers UNKNOWN, never a traceback
        sys.stdout.write(f"BOUNCEKEEPER UNKNOWN - {exc!r}\n")
        return UNKNOWN
    status = max(c.status for c in checks)
    if args.json:
        out = {"status": NAMES[status], "checks": [dict(asdict(c), status=NAMES[c.status]) for c in checks]}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return status
    summary = "; ".join(f"{c.name} {NAMES[c.status].lower()}: {c.detail}" for c in checks)
    perf = " ".join(f"{c.name}={c.value}" for c in checks if c.value is not None)
    sys.stdout.write(f"BOUNCEKEEPER {NAMES[status]} - {summary}" + (f" | {perf}" if perf else "") + "\n")
    return status
