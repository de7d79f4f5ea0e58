"""`bouncekeeper setup sendmail`: the milter, the bounce domain and the LMTP route, merged into a .mc.

What is merged into the operator's `sendmail.mc` (the knowledge is sendmail/bouncekeeper.mc's, tested there):
- the milter, appended to the input filters: after the operator's own `INPUT_MAIL_FILTER`s, or appended
  to their explicit `confINPUT_MAIL_FILTERS` list (then declared with `MAIL_FILTER` only); with no `F=`
  flag, so that Sendmail passes ordinary mail on when the milter is down;
- the macros the milter reads, added to the operator's `confMILTER_MACROS_*` lists when they define
  them, else defined as Sendmail's defaults plus ours (other filters keep every macro they had);
- `RELAY_DOMAIN` for the bounce domain, and the LMTP mailer with the ruleset 0 route that sends the
  bounce domain (so also Sendmail's own DSNs, which no milter sees) to `bouncekeeper lmtp`: a bounce that
  arrives while the milter is down is still recorded, or stays queued while Redis is away.

The block goes before the first `MAILER(` line, between `dnl BEGIN bouncekeeper` and `dnl END
bouncekeeper`. The merged .mc is built with m4 into a staged .cf and Sendmail's address test (`-bt`)
must route a VERP address to the mailer before anything is written.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bouncekeeper import config
from bouncekeeper.ops.setup import command, plan
from bouncekeeper.ops.setup.route import BounceRoute, SetupError, from_settings

BEGIN = "dnl BEGIN bouncekeeper"
END = "dnl END bouncekeeper"
_BLOCK = re.compile(rf"^{BEGIN}\b.*?^{END}[^\n]*\n", re.MULTILINE | re.DOTALL)
FILTER = "bouncekeeper"
DEFAULT_CF_DIRS = ("/usr/share/sendmail/cf", "/usr/share/sendmail-cf")

# Sendmail's built-in macro lists (Milter.macros.* when the .mc leaves them unset) and what the milter
# needs beyond them: the client's address, and the queue id i for every log line. The built-in lists
# already carry {daemon_name} (the submission port) and {auth_authen} (a SASL client).
MACROS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "confMILTER_MACROS_CONNECT": (("j", "_", "{daemon_name}", "{if_name}", "{if_addr}"), ("{client_addr}",)),
    "confMILTER_MACROS_ENVRCPT": (("{rcpt_mailer}", "{rcpt_host}", "{rcpt_addr}"), ("i",)),
    "confMILTER_MACROS_EOM": (("{msg_id}",), ("i",)),
}


@dataclass(frozen=True, slots=True)
class Sendmail:
    """The milter's socket in libmilter syntax (`[milter] socket`), and the bounce route."""

    milter_socket: str
    route: BounceRoute


def _define(name: str) -> re.Pattern[str]:
    return re.compile(rf"^define\(`{name}',\s*`([^']*)'\)(dnl)?[ \t]*$", re.MULTILINE)


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _append(text: str, name: str, extra: tuple[str, ...]) -> tuple[str, bool]:
    """`text` with `extra` appended to the operator's own `define(NAME)` list; False: no such define."""
    matches = list(_define(name).finditer(text))
    if not matches:
        return text, False
    match = matches[-1]  # the last definition is the one m4 keeps
    items = _items(match.group(1))
    missing = [item for item in extra if item not in items]
    if not missing:
        return text, True
    value = ", ".join([*items, *missing])
    return text[: match.start(1)] + value + text[match.end(1) :], True


def unmerge(text: str) -> str:
    return _BLOCK.sub("", text)


def merge_mc(text: str, target: Sendmail) -> str:
    """The operator's .mc with bouncekeeper merged in (idempotent; the operator's lines kept in order)."""
    text = unmerge(text)
    text, explicit_list = _append(text, "confINPUT_MAIL_FILTERS", (FILTER,))
    lines = [
        f"{BEGIN} (written by `bouncekeeper setup sendmail`; `--undo` takes it out again)",
        "define(`_BK_DIVERSION_', divnum)dnl",
    ]
    lines += [
        "dnl The milter, after the other filters. No F= flag: when it is down, Sendmail passes ordinary mail",
        "dnl unfiltered; bounces still reach bouncekeeper by the LMTP route below.",
        f"{'MAIL_FILTER' if explicit_list else 'INPUT_MAIL_FILTER'}(`{FILTER}', "
        f"`S={target.milter_socket}, T=C:10s;S:30s;R:30s;E:1m')dnl",
    ]
    for name, (defaults, ours) in MACROS.items():
        if not ours:
            continue
        text, defined = _append(text, name, ours)
        if not defined:
            lines.append(f"define(`{name}', `{', '.join((*defaults, *ours))}')dnl")
    lines += _route_lines(target.route)
    # LOCAL_RULE_0 left m4 in ruleset 0's diversion: back to the one the operator's next line expects.
    lines += ["divert(_BK_DIVERSION_)dnl", END]
    block = "\n".join(lines) + "\n"
    mailer = re.search(r"^MAILER\(", text, re.MULTILINE)
    at = mailer.start() if mailer else len(text)
    if at == len(text) and text and not text.endswith("\n"):
        block = "\n" + block
    return text[:at] + block + text[at:]


def _route_lines(route: BounceRoute) -> list[str]:
    listener = route.listener
    address = f"FILE {listener.socket}" if listener.socket else f"TCP {listener.host} {listener.port}"
    domain = route.bounce_domain
    return [
        "dnl Bounces come from anywhere to the bounce domain ([verp] bounce_domain).",
        f"RELAY_DOMAIN(`{domain}')dnl",
        "dnl The LMTP mailer to `bouncekeeper lmtp` ([lmtp] listen): z = LMTP, one reply per recipient.",
        "dnl No M flag: the listener sees the Message-ID the milter saw, so a bounce both see counts once.",
        "MAILER_DEFINITIONS",
        f"Mbouncekeeper,\tP=[IPC], F=mDFuXz8, S=EnvFromSMTP/HdrFromSMTP, R=EnvToSMTP/HdrToSMTP, E=\\r\\n, "
        f"L=990, T=DNS/RFC822/SMTP, A={address}",
        "dnl Ruleset 0 (before SMART_HOST and the mailertable): the bounce domain, and with it Sendmail's",
        "dnl own DSNs, which no milter sees, goes to the listener; it answers 451 while Redis is away.",
        "LOCAL_RULE_0",
        "dnl RFC 5321 section 4.5.1: postmaster of the bounce domain is this host's postmaster.",
        f"Rpostmaster < @ {domain} . > $*\t$: postmaster < @ $j . > $1",
        f"Rpostmaster < @ {domain} > $*\t$: postmaster < @ $j . > $1",
        f"R$* < @ {domain} . > $*\t$#bouncekeeper $@ localhost $: $1 < @ {domain} . > $2",
        f"R$* < @ {domain} > $*\t$#bouncekeeper $@ localhost $: $1 < @ {domain} . > $2",
    ]


def same_cf(a: bytes, b: bytes) -> bool:
    """Two .cf files equal but for the lines m4 stamps with the build's time, user and folder."""

    def strip(data: bytes) -> list[bytes]:
        return [line for line in data.splitlines() if not line.startswith((b"##### built by", b"##### in "))]

    return strip(a) == strip(b)


# --- I/O ------------------------------------------------------------------------------------------------


def target_from(settings: config.Settings) -> Sendmail:
    socket = settings.milter.socket
    if not socket:
        raise SetupError(f"{settings.source}: milter.socket: required (Sendmail's INPUT_MAIL_FILTER S=)")
    if not re.fullmatch(r"(unix|local):/[^\s,']+|inet6?:\d+@[^\s,']+", socket):
        raise SetupError(
            f"{settings.source}: milter.socket: {socket!r} is not libmilter's unix:/path or inet:PORT@HOST"
        )
    return Sendmail(milter_socket=socket, route=from_settings(settings))


def build_cf(mc_text: str, cf_dir: Path) -> bytes:
    """m4 over the .mc, as `make -C /etc/mail` does; Debian's .mc includes cf.m4 itself."""
    with tempfile.TemporaryDirectory(prefix="bk-setup-sendmail-") as tmp:
        mc = Path(tmp) / "sendmail.mc"
        mc.write_text(mc_text, errors="surrogateescape")
        argv = ["m4", str(mc)] if "cf.m4'" in mc_text else [
            "m4", f"-D_CF_DIR_={cf_dir}/", str(cf_dir / "m4" / "cf.m4"), str(mc)
        ]  # fmt: skip
        try:
            result = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        except OSError as exc:
            raise SetupError(
                f"cannot run m4: {exc.strerror} (Debian: apt-get install m4 sendmail-cf)"
            ) from exc
        # cf.m4 reports its errors with errprint ("*** ERROR: ...") and exits 0; warnings are not errors.
        if result.returncode != 0 or b"*** ERROR" in result.stderr:
            raise SetupError(f"m4 refuses the merged .mc:\n{result.stderr.decode(errors='replace')}")
        return result.stdout


def check(cf: bytes, target: Sendmail, sendmail: str) -> str:
    """Sendmail's address test on the staged .cf: a VERP address must resolve to the bouncekeeper mailer."""
    probe = f"{target.route.prefix}+alice=example.com+1abc@{target.route.bounce_domain}"
    with tempfile.TemporaryDirectory(prefix="bk-setup-sendmail-") as tmp:
        staged = Path(tmp) / "sendmail.cf"
        staged.write_bytes(cf)
        try:
            result = subprocess.run(
                [sendmail, "-C", str(staged), "-bt"],
                input=f"3,0 {probe}\n",
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except OSError as exc:
            raise SetupError(f"cannot run {sendmail}: {exc.strerror} (--sendmail PATH)") from exc
    out = result.stdout + result.stderr
    if re.search(r"line \d+:", out) or "$# bouncekeeper" not in out:
        raise SetupError(
            f"sendmail -bt on the staged .cf does not route {probe} to the bouncekeeper mailer:\n{out}"
        )
    return f"sendmail -bt routes {probe} to the bouncekeeper mailer"


def build(mc_path: Path, cf_path: Path | None, cf_dir: Path, target: Sendmail) -> tuple[plan.Plan, bytes]:
    before = plan.read(mc_path)
    if before is None:
        raise SetupError(f"{mc_path}: no such file (--mc)")
    merged = merge_mc(before.decode("utf-8", "surrogateescape"), target).encode("utf-8", "surrogateescape")
    cf = build_cf(merged.decode("utf-8", "surrogateescape"), cf_dir)
    edits = [plan.FileEdit(mc_path, before, merged)]
    if cf_path is not None:
        current = plan.read(cf_path)
        unchanged = current is not None and same_cf(current, cf)
        edits.append(plan.FileEdit(cf_path, current, current if unchanged and current is not None else cf))
    return plan.Plan(tuple(edits), notes=notes(cf_path, target)), cf


def reload_note(cf_path: Path | None) -> str:
    if cf_path is None:
        return "then run: sendmailconfig (Debian), or make -C /etc/mail && systemctl restart sendmail"
    return "then run: systemctl restart sendmail (or send the sendmail daemon SIGHUP)"


def notes(cf_path: Path | None, target: Sendmail) -> tuple[str, ...]:
    out = [reload_note(cf_path)]
    if not target.route.senders:
        out.append("[verp] senders is empty: no sender's mail gets a VERP address (list the application's)")
    domain = target.route.bounce_domain
    out.append(f"DNS: an MX for {domain} pointing at this host; SPF and DMARC for it (docs/sendmail.md)")
    return tuple(out)


def command_plan(args: argparse.Namespace, settings: config.Settings) -> tuple[plan.Plan, str]:
    target = target_from(settings)
    cf_dir = (
        Path(args.cf_dir)
        if args.cf_dir
        else next((Path(d) for d in DEFAULT_CF_DIRS if Path(d).is_dir()), None)
    )
    if cf_dir is None:
        raise SetupError("sendmail's cf folder not found (Debian: apt-get install sendmail-cf; or --cf-dir)")
    change, cf = build(Path(args.mc), Path(args.cf) if args.cf else None, cf_dir, target)
    binary = command.find(args.sendmail, "sendmail")
    if binary is None:
        raise SetupError("no sendmail binary found to check the staged .cf (--sendmail PATH)")
    return change, check(cf, target, binary) if change.changes else ""


def undo_notes(args: argparse.Namespace) -> list[str]:
    return [f"# {reload_note(Path(args.cf) if args.cf else None)}"]
