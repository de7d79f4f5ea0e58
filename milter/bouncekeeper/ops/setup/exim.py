"""`bouncekeeper setup exim`: bouncekeeper's routers, transport, VERP signing and loop guard, merged in.

Two layouts, as Debian ships them:
- **split** (`dc_use_split_config='true'`): new files with ordering prefixes beside the operator's
  (`conf.d/main/05_bouncekeeper`, `conf.d/router/170_bouncekeeper` before Debian's 200 primary router,
  `conf.d/transport/30_bouncekeeper`, `bouncekeeper_check_data` for Debian's data ACL hook), and the bounce
  domain added to `dc_relay_domains` so that Debian's RCPT ACL accepts it;
- **single file** (a hand-written `exim4.conf`, or Debian's `exim4.conf.template`): marked blocks inserted
  at the right places: macros at the end of the main section, an `accept` for the bounce domain at the top
  of the RCPT ACL, the loop guard at the top of the DATA ACL, the routers before the operator's first
  router, the transport before the first transport. Nothing of the operator's is replaced or moved.

The functions over texts are pure; `build` reads the files and `check` runs Exim on a staged copy.
What the pieces do and why (errors_to rather than return_path, the one regex for the day) is in
docs/exim.md; the routers, transports, VERP recipe and loop guard are the ones exim/ ships
(exim4.conf.example, conf.d/), which tests/ops/setup/test_exim.py holds in step with these texts (every
router and transport, in order, option for option).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bouncekeeper import config
from bouncekeeper.ops.setup import command, plan
from bouncekeeper.ops.setup.route import BounceRoute, SetupError, from_settings, has_wildcard

BEGIN = "# BEGIN bouncekeeper"
END = "# END bouncekeeper"
_BLOCK = re.compile(rf"^[ \t]*{BEGIN}\b.*?^[ \t]*{END}[^\n]*\n", re.MULTILINE | re.DOTALL)
_SECTION = re.compile(r"^[ \t]*begin[ \t]+(\w+)[ \t]*$", re.MULTILINE)

# Debian's split layout: file names sort into place among Debian's own (router 170 < 200 primary).
MAIN_FILE = "conf.d/main/05_bouncekeeper"
ROUTER_FILE = "conf.d/router/170_bouncekeeper"
TRANSPORT_FILE = "conf.d/transport/30_bouncekeeper"
CHECK_DATA_FILE = "bouncekeeper_check_data"
DEBCONF_FILE = "update-exim4.conf.conf"
DATA_HOOK = "CHECK_DATA_LOCAL_ACL_FILE"
# dc_relay_domains='a:b' as debconf writes it, or "a:b" or a:b by hand (group 2: the list).
_RELAY_DOMAINS = re.compile(r"^[ \t]*dc_relay_domains=(['\"]?)([^'\"$`\\\n]*)\1[ \t]*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the operator's configuration is: a Debian conf.d folder, or one file."""

    split: bool
    directory: Path  # /etc/exim4 (CONFDIR)
    file: Path | None = None  # the single file when not split


def header(route: BounceRoute) -> str:
    return (
        f"# Written by `bouncekeeper setup exim` from {route.source};\n"
        "# `bouncekeeper setup exim --undo` takes it out again.\n"
    )


def address_list(patterns: tuple[str, ...]) -> str:
    """An Exim address list matching what the milter's shell patterns match (lower-cased senders)."""
    items = []
    for pattern in patterns:
        if not has_wildcard(pattern) or re.fullmatch(r"\*@[^*?\[]+", pattern):
            items.append(pattern)  # Exim's own syntax: an address, or *@domain
            continue
        body = "".join(
            ".*" if c == "*" else "." if c == "?" else c if c in "[]" else re.escape(c) for c in pattern
        )
        # A regex item; \N...\N keeps Exim's expansion away from its backslashes and dollars.
        items.append(rf"\N^(?i){body}$\N")
    return " : ".join(items)


def macros(route: BounceRoute) -> str:
    """The macros and the domain list every other block uses; values from the TOML file."""
    lines = [
        f"BK_BOUNCE_DOMAIN = {route.bounce_domain}",
        f"BK_KEYFILE = {route.key_file}",
        f"BK_PREFIX = {route.prefix}",
    ]
    if route.senders:
        lines.append(f"BK_SENDERS = {address_list(route.senders)}")
    if route.protected:
        lines.append(f"BK_PROTECTED = {address_list(route.protected)}")
    if route.listener.socket:
        lines.append(f"BK_LMTP_SOCKET = {route.listener.socket}")
    else:
        lines += [f"BK_LMTP_HOST = {route.listener.host}", f"BK_LMTP_PORT = {route.listener.port}"]
    return "\n".join(lines) + "\n" + _VERP_MACROS + "\ndomainlist bounce_domains = BK_BOUNCE_DOMAIN\n"


# The signed VERP address of $local_part@$domain (docs/verp.md). The key file is read at each expansion
# and trimmed of surrounding white space as bouncekeeper trims it, so a key file with CRLF line ends signs
# as the milter does (${readfile} would keep the CR). The day is computed once and reused as $1: two
# readings of $tod_epoch could straddle midnight. RFC 5321: at most 64 octets in a local part, so longer
# recipients keep the plain sender.
_VERP_MACROS = r"""BK_BODY = ${lc:$local_part}=${lc:$domain}
BK_SECRET = ${sg{${readfile{BK_KEYFILE}}}{\N^\s+|\s+$\N}{}}
BK_KEY_ID = ${length_2:${lc:${sha1:BK_SECRET}}}
BK_VERP = ${if match{${eval:$tod_epoch/86400}}{\N^(\d+)$\N}\
             {BK_PREFIX+BK_BODY+$1BK_KEY_ID${length_10:${hmac{sha1}{BK_SECRET}{$1:BK_BODY}}}@BK_BOUNCE_DOMAIN}}
BK_FITS = ${if <{${strlen:BK_BODY}}{${eval:46-${strlen:BK_PREFIX}}}}"""


def routers(route: BounceRoute) -> str:
    transport = "bouncekeeper_lmtp" if route.listener.socket else "bouncekeeper_lmtp_tcp"
    text = f"""# Bounces: every VERP-shaped address at the bounce domain goes to the listener. First, so
# that Exim verifies the errors_to addresses below through it.
bouncekeeper_bounces:
  driver = accept
  domains = +bounce_domains
  local_parts = \\N^BK_PREFIX\\+.+\\+[0-9]+[0-9a-f]{{12}}$\\N
  transport = {transport}

# RFC 5321 section 4.5.1: postmaster@ (and abuse@) the bounce domain reach a person, as the same local
# part at this host (your local routers deliver it; Debian's /etc/aliases sends both to root).
bouncekeeper_postmaster:
  driver = redirect
  domains = +bounce_domains
  local_parts = postmaster : abuse
  data = $local_part@$primary_hostname

# Anything else at the bounce domain is refused at RCPT (verify = recipient): no bounce of a bounce.
bouncekeeper_unknown:
  driver = redirect
  domains = +bounce_domains
  allow_fail
  data = :fail: not a bounce address
  no_more
"""
    if route.senders:
        text += """
# Outbound VERP for the senders [verp] senders lists: a redirect to the very same address whose only
# effect is errors_to, so the VERP address is both the envelope sender and where Exim's own bounces go.
# The copy goes on to the routers below (repeat_use = false); one envelope per recipient follows.
bouncekeeper_verp:
  driver = redirect
  domains = ! +local_domains : ! +bounce_domains
  senders = BK_SENDERS
  condition = BK_FITS
  data = ${quote_local_part:$local_part}@$domain
  errors_to = BK_VERP
  repeat_use = false
"""
    return text


def transports(route: BounceRoute) -> str:
    if route.listener.socket:
        return """# LMTP over a unix socket: one reply per recipient after DATA (RFC 2033 section 4.2).
bouncekeeper_lmtp:
  driver = lmtp
  socket = BK_LMTP_SOCKET
  batch_max = 50
  timeout = 60s
"""
    return """# LMTP over TCP: the smtp transport speaks LMTP when asked (the lmtp transport: sockets only).
bouncekeeper_lmtp_tcp:
  driver = smtp
  protocol = lmtp
  hosts = BK_LMTP_HOST
  port = BK_LMTP_PORT
  hosts_override
  # The listener is on this host: without this, Exim refuses to deliver to itself.
  allow_localhost
  max_rcpt = 50
"""


# Mail for the application's own addresses that is itself automatic (a null sender, RFC 5321 section
# 4.5.5; multipart/report, RFC 6522; Precedence bulk/junk/list; Auto-Submitted other than "no", RFC 3834
# section 5) is accepted and dropped, so the application and an autoresponder cannot bounce mail to each
# other forever. Only when every recipient is protected: a DATA ACL decides for the whole message.
LOOP_GUARD = r"""  # bouncekeeper's loop guard: automatic mail to the application's own addresses is dropped.
  discard condition = ${if forall{<, $recipients}{match_address{$item}{BK_PROTECTED}}}
          condition = ${if or{\
                        {eq{$sender_address}{}}\
                        {match{$h_Content-Type:}{\N(?i)^\s*multipart/report\b\N}}\
                        {match{$h_Precedence:}{\N(?i)^\s*(bulk|junk|list)\b\N}}\
                        {and{{def:h_Auto-Submitted:}{!match{$h_Auto-Submitted:}{\N(?i)^\s*no\b\N}}}}\
                      }}
          log_message = bouncekeeper loop guard: automatic mail to a protected address discarded
"""

RCPT_ACCEPT = """  # Bounces come from anywhere: accept the bounce domain's VERP addresses and postmaster (the
  # routers refuse anything else there, through verify = recipient).
  accept  domains = +bounce_domains
          verify = recipient
"""


def block(text: str, indent: str = "") -> str:
    """Text between the markers `unmerge` finds; no blank line outside them, so it leaves none behind."""
    return f"{indent}{BEGIN}\n{text}{indent}{END}\n"


def unmerge(text: str) -> str:
    """The text without any block an earlier run inserted: what the operator wrote."""
    return _BLOCK.sub("", text)


# --- the single file ----------------------------------------------------------------------------------


def merge_single(text: str, route: BounceRoute) -> str:
    """The operator's whole configuration file with bouncekeeper's blocks inserted (idempotent)."""
    text = unmerge(text)
    sections = {m.group(1).lower(): m for m in _SECTION.finditer(text)}
    for needed in ("acl", "routers", "transports"):
        if needed not in sections:
            raise SetupError(f"no 'begin {needed}' section: not a configuration bouncekeeper can merge into")
    main_end = min(m.start() for m in sections.values())
    main = text[:main_end]
    rcpt = _acl_name(text, main, "rcpt")
    if rcpt is None:
        raise SetupError("no acl_smtp_rcpt: Exim refuses every SMTP recipient, bounces could not arrive")
    data = _acl_name(text, main, "data") if route.protected else None
    main_block = header(route) + macros(route)
    inserts: list[tuple[int, str]] = []
    if route.protected and data is None:
        # No DATA ACL yet: ours, which only discards loops and accepts everything else.
        main_block += "acl_smtp_data = bouncekeeper_check_data\n"
        acl_text = "bouncekeeper_check_data:\n" + LOOP_GUARD + "  accept\n"
        inserts.append((_line_after(text, sections["acl"].end()), block(acl_text)))
    inserts.append((main_end, block(main_block)))
    inserts.append((_acl_start(text, rcpt, "rcpt"), block(RCPT_ACCEPT, "  ")))
    if data is not None:
        inserts.append((_acl_start(text, data, "data"), block(LOOP_GUARD, "  ")))
    inserts.append((_line_after(text, sections["routers"].end()), block(routers(route))))
    inserts.append((_line_after(text, sections["transports"].end()), block(transports(route))))
    for at, piece in sorted(inserts, key=lambda item: item[0], reverse=True):
        text = text[:at] + piece + text[at:]
    return text


def _acl_name(text: str, main: str, which: str) -> str | None:
    """The ACL `acl_smtp_WHICH` names, through one macro (Debian's MAIN_ACL_CHECK_DATA) if need be."""
    found = re.findall(rf"^[ \t]*acl_smtp_{which}[ \t]*=[ \t]*(\S+)[ \t]*$", main, re.MULTILINE)
    if not found:
        return None
    name: str = found[-1]
    macro = re.findall(rf"^[ \t]*{re.escape(name)}[ \t]*=[ \t]*(\S+)[ \t]*$", text, re.MULTILINE)
    return macro[0] if macro and name[:1].isupper() else name


def _acl_start(text: str, name: str, which: str) -> int:
    """The offset just after the line `NAME:` that starts the ACL."""
    match = re.search(rf"^[ \t]*{re.escape(name)}[ \t]*:[ \t]*$", text, re.MULTILINE)
    if match is None:
        raise SetupError(f"acl_smtp_{which} names {name}, which is not defined in the ACL section")
    return _line_after(text, match.end())


def _line_after(text: str, offset: int) -> int:
    newline = text.find("\n", offset)
    return len(text) if newline < 0 else newline + 1


# --- Debian's split layout ----------------------------------------------------------------------------


def split_files(route: BounceRoute, operator_hook: bool) -> dict[str, str]:
    """The new files, by path relative to CONFDIR. `operator_hook`: the operator has a data ACL file."""
    main = header(route) + macros(route)
    files = {
        ROUTER_FILE: header(route) + routers(route),
        TRANSPORT_FILE: header(route) + transports(route),
    }
    if route.protected:
        files[CHECK_DATA_FILE] = header(route) + LOOP_GUARD
        if not operator_hook:
            main += (
                f"\n# Debian's acl_check_data includes this file.\n{DATA_HOOK} = CONFDIR/{CHECK_DATA_FILE}\n"
            )
    files[MAIN_FILE] = main
    return files


def add_relay_domain(debconf: str, domain: str) -> str:
    """update-exim4.conf.conf with `domain` in dc_relay_domains (kept as it is when already there).

    update-exim4.conf sources the file as shell: the last assignment wins, quoted '...', "..." or bare,
    so ours is merged into that one; a line appended after it would replace the operator's list."""
    matches = list(_RELAY_DOMAINS.finditer(debconf))
    match = matches[-1] if matches else None
    if match is None:
        return (
            debconf
            + ("" if debconf.endswith("\n") or not debconf else "\n")
            + f"dc_relay_domains='{domain}'\n"
        )
    items = [item.strip() for item in re.split(r"[:;]", match.group(2)) if item.strip()]
    if domain in (item.lower() for item in items):
        return debconf
    # Semicolons, as debconf asks for them, unless the list has colons or is unquoted (a ; ends it there).
    separator = ":" if ":" in match.group(2) or not match.group(1) else ";"
    value = separator.join([*items, domain])
    return debconf[: match.start(2)] + value + debconf[match.end(2) :]


def include_in_hook(text: str) -> str:
    """The operator's own data ACL file with ours included first (theirs may end in an accept)."""
    return block(f".include CONFDIR/{CHECK_DATA_FILE}\n") + unmerge(text)


def operator_hook(files: dict[str, str]) -> str | None:
    """The name (relative to CONFDIR, or absolute) of the operator's own data ACL file, if any."""
    for name, text in sorted(files.items()):
        if name == MAIN_FILE:
            continue
        for value in re.findall(rf"^[ \t]*{DATA_HOOK}[ \t]*=[ \t]*(\S+)[ \t]*$", text, re.MULTILINE):
            if value != f"CONFDIR/{CHECK_DATA_FILE}":
                return str(value).removeprefix("CONFDIR/")
    return None


# --- I/O ------------------------------------------------------------------------------------------------


def detect(path: Path) -> Layout:
    """The layout at `path`: a folder (Debian's /etc/exim4) or a configuration file."""
    if path.is_file():
        return Layout(split=False, directory=path.parent, file=path)
    debconf = plan.read(path / DEBCONF_FILE) or b""
    if re.search(rb"^dc_use_split_config='true'", debconf, re.MULTILINE) and (path / "conf.d").is_dir():
        return Layout(split=True, directory=path)
    for name in ("exim4.conf", "exim4.conf.template"):
        if (path / name).is_file():
            return Layout(split=False, directory=path, file=path / name)
    raise SetupError(f"{path}: neither a Debian conf.d layout nor an Exim configuration file")


def build(layout: Layout, route: BounceRoute) -> plan.Plan:
    if not layout.split:
        assert layout.file is not None
        edit = _edit(layout.file, merge_single(_read_text(layout.file), route))
        return plan.Plan((edit,), notes=notes(layout, route))
    main_dir = layout.directory / "conf.d" / "main"
    candidates = {f"conf.d/main/{p.name}": p for p in main_dir.iterdir() if p.is_file()}
    localmacros = layout.directory / "exim4.conf.localmacros"
    if localmacros.is_file():
        candidates["exim4.conf.localmacros"] = localmacros
    hook = operator_hook({name: _read_text(p) for name, p in candidates.items()})
    edits = [
        _edit(layout.directory / name, text)
        for name, text in sorted(split_files(route, hook is not None).items())
    ]
    if hook is not None and route.protected:
        hook_path = layout.directory / hook
        edits.append(_edit(hook_path, include_in_hook(_read_text(hook_path))))
    debconf = layout.directory / DEBCONF_FILE
    edits.append(_edit(debconf, add_relay_domain(_read_text(debconf), route.bounce_domain)))
    return plan.Plan(tuple(edits), notes=notes(layout, route))


def reload_note(layout: Layout) -> str:
    # Debian builds the running configuration from conf.d or from the template with update-exim4.conf.
    if layout.split or (layout.file is not None and layout.file.name == "exim4.conf.template"):
        return "then run: update-exim4.conf && systemctl reload exim4"
    return "then run: systemctl reload exim4 (or send the exim daemon SIGHUP)"


def notes(layout: Layout, route: BounceRoute) -> tuple[str, ...]:
    out = [reload_note(layout)]
    if not route.senders:
        out.append("[verp] senders is empty: no sender's mail gets a VERP address (list the application's)")
    out.append(
        f"DNS: an MX for {route.bounce_domain} pointing at this host; SPF and DMARC for it (docs/exim.md)"
    )
    return tuple(out)


def check(change: plan.Plan, layout: Layout, exim: str, update: str | None) -> str:
    """Exim's verdict (`-bV`) on the configuration as it would be; SetupError when it refuses it."""
    with tempfile.TemporaryDirectory(prefix="bk-setup-exim-") as tmp:
        # Exim reads a -C file's includes as its own user: the folder must be traversable (not listable);
        # the copied files keep the modes they have in the operator's folder.
        Path(tmp).chmod(0o711)
        staged = Path(tmp) / "etc"
        shutil.copytree(layout.directory, staged, symlinks=True)
        for edit in change.edits:
            if edit.path.is_relative_to(layout.directory):
                target = staged / edit.path.relative_to(layout.directory)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(edit.after)
        if layout.split:
            if update is None:
                raise SetupError(
                    "update-exim4.conf not found: cannot assemble the staged conf.d (--update-exim4-conf)"
                )
            assembled = Path(tmp) / "exim4.conf"
            _run(["sh", update, "-d", str(staged), "-o", str(assembled)], "update-exim4.conf")
        else:
            assert layout.file is not None
            assembled = staged / layout.file.relative_to(layout.directory)
        # The staged folder stands in for CONFDIR: a macro given with -D wins over the file's definition.
        return _run([exim, f"-DCONFDIR={staged}", "-C", str(assembled), "-bV"], "exim -bV")


def _run(argv: list[str], what: str) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise SetupError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from exc
    if result.returncode != 0:
        raise SetupError(f"{what} refuses the staged configuration:\n{result.stdout}{result.stderr}")
    return result.stdout


def _read_text(path: Path) -> str:
    data = plan.read(path)
    return "" if data is None else data.decode("utf-8", "surrogateescape")


def _edit(path: Path, text: str) -> plan.FileEdit:
    return plan.FileEdit(path, plan.read(path), text.encode("utf-8", "surrogateescape"))


def command_plan(args: argparse.Namespace, settings: config.Settings) -> tuple[plan.Plan, str]:
    """`bouncekeeper setup exim`: the plan for the configuration at --exim-config, and Exim's verdict."""
    layout = detect(Path(args.exim_config))
    change = build(layout, from_settings(settings))
    exim = command.find(args.exim, "exim4", "exim")
    if exim is None:
        raise SetupError("no exim binary found to check the staged configuration (--exim PATH)")
    update = command.find(args.update_exim4_conf, "update-exim4.conf")
    if update is None and (Path(exim).parent / "update-exim4.conf").exists():
        update = str(Path(exim).parent / "update-exim4.conf")
    verdict = check(change, layout, exim, update) if change.changes else ""
    said = [line for line in verdict.splitlines() if line.startswith("Configuration file is")]
    return change, f"exim -bV accepts the staged configuration ({exim}){': ' + said[0] if said else ''}"


def undo_notes(args: argparse.Namespace) -> list[str]:
    layout = detect(Path(args.exim_config))
    return [f"# {reload_note(layout)}"]
