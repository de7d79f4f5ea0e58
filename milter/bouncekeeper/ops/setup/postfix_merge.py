"""`bouncekeeper setup postfix`: bouncekeeper merged into a Postfix 3.x configuration (pure functions).

What the merge does to what the operator has (docs/postfix.md shows it line by line):
- `smtpd_milters`: bouncekeeper's milter appended, with per-milter settings
  (`{ unix:..., default_action=accept, protocol=6 }`): no global `milter_*` setting is touched, so an
  OpenDKIM or a virus scanner keeps its own timeouts and default action;
- `non_smtpd_milters`: appended likewise, unless it already reaches ours (`$smtpd_milters`);
- `relay_domains` gains the bounce domain, `transport_maps` a table (generated from the TOML config) that
  sends it to `bouncekeeper lmtp`: a bounce the milter passes on undecided, one that arrives while the
  milter is down, and Postfix's own bounces to a VERP sender all end in the LMTP listener, which records
  them or answers 451 so that they wait in Postfix's queue;
- `smtpd_recipient_restrictions` gains, first, a `check_recipient_access` table (generated too) that
  accepts `postmaster@` and the VERP local parts of the bounce domain and refuses its other local parts;
  the operator's checks (SPF, RBLs ...) follow unchanged;
- master.cf: an `lmtp` service is added only when there is none; no existing service is touched.

Values are read as `postconf` reports them (so `$references` and multi-line values are understood) and
written back as one `name = value` line in place of the old one; every other byte of main.cf stays.
The I/O (running postconf, staging, `postfix check`) lives in `setup/postfix.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bouncekeeper.daemons import milterd
from bouncekeeper.ops.setup import plan, postfix_routed
from bouncekeeper.ops.setup.route import SetupError

# The parameters the merge reads (raw and expanded) and may change.
READ = (
    "smtpd_milters",
    "non_smtpd_milters",
    "relay_domains",
    "transport_maps",
    "smtpd_recipient_restrictions",
    "relay_recipient_maps",
    "mydestination",
    "virtual_alias_domains",
    "virtual_mailbox_domains",
    "queue_directory",
    "milter_connect_macros",
    "milter_mail_macros",
    "myhostname",
    "virtual_alias_maps",
    "smtpd_restriction_classes",
)
TRANSPORT_TABLE = "bouncekeeper_transport"
RECIPIENT_TABLE = "bouncekeeper_recipient_access"
VIRTUAL_TABLE = "bouncekeeper_virtual"
TABLES = (TRANSPORT_TABLE, RECIPIENT_TABLE, VIRTUAL_TABLE)
MARK = "# bouncekeeper (added by `bouncekeeper setup postfix`; `--undo` restores this file)"
# The service Postfix's transport_maps entry names; Debian's master.cf has it, a minimal one may not.
LMTP_SERVICE = "lmtp      unix  -       -       n       -       -       lmtp\n"
# Characters special in a POSIX extended regular expression (regexp_table(5)), and its "/" delimiter.
_ERE_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\/])")


@dataclass(frozen=True, slots=True)
class Service:
    """One master.cf service as `postconf -F` reports it."""

    name: str
    type: str
    chroot: bool
    command: str


@dataclass(frozen=True, slots=True)
class Current:
    """What Postfix has now: the files' bytes and what postconf says about them."""

    config_dir: Path
    main_cf: bytes | None
    master_cf: bytes | None
    raw: Mapping[str, str]  # postconf -h NAME: the value as written (or the default), unexpanded
    expanded: Mapping[str, str]  # postconf -x -h NAME
    services: tuple[Service, ...]
    tables: Mapping[str, bytes | None]  # the generated tables' current bytes, by file name


@dataclass(frozen=True, slots=True)
class Wanted:
    """What bouncekeeper needs, from its TOML config."""

    source: str  # the config file, named in the generated tables
    bounce_domain: str
    local_prefix: str
    milter_socket: str  # libmilter syntax: unix:/path or inet:PORT@HOST
    lmtp_listen: str  # [lmtp] listen: unix:/path or HOST:PORT
    # The routed set-up (postfix_routed): no milter on smtpd_milters; the policy service decides.
    routed: bool = False
    policy_socket: str = ""  # [milter] policy_socket, libmilter syntax
    policy_filter: str = ""  # [milter] policy_filter
    protected: tuple[str, ...] = ()  # [milter] protected_recipients
    app_services: tuple[str, ...] = ()  # master.cf NAME/TYPE of the application's listeners


# -- values ---------------------------------------------------------------------------------------------


def list_items(value: str) -> list[str]:
    """A Postfix list value split as Postfix splits it: on commas and white space, `{ ... }` kept whole."""
    items: list[str] = []
    depth = 0
    current = ""
    for char in value:
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(depth - 1, 0)
        if depth == 0 and (char.isspace() or char == ","):
            if current:
                items.append(current)
            current = ""
            continue
        current += char
    if current:
        items.append(current)
    return items


def milter_address(item: str) -> str:
    """The address of one milter list item: `inet:h:p` alone or the first word of `{ inet:h:p, ... }`."""
    inner = item.strip().removeprefix("{").removesuffix("}")
    words = list_items(inner)
    return words[0] if words else ""


def milter_entry(address: str) -> str:
    """Our list item. Per-milter settings (Postfix 3.0+) instead of the global `milter_*` ones:
    `default_action=accept` lets ordinary mail through while the milter is down (bounces still reach
    the LMTP listener through the transport), `protocol=6` is what the milter needs (CHGFROM, SKIP)
    whatever an older milter on the same list was given."""
    return f"{{ {address}, default_action=accept, protocol=6 }}"


def _append(raw: str, item: str) -> str:
    return f"{raw.strip()}, {item}" if raw.strip() else item


def _prepend(item: str, raw: str) -> str:
    return f"{item}, {raw.strip()}" if raw.strip() else item


def postfix_path(path: str, chrooted: bool, queue_directory: str, what: str) -> str:
    """A socket path as a (possibly chrooted) Postfix daemon opens it."""
    if not chrooted:
        return path
    root = queue_directory.rstrip("/") + "/"
    if not path.startswith(root):
        raise SetupError(
            f"{what}: {path} is outside {queue_directory}, but the Postfix service that opens it runs "
            f"chrooted there: put the socket under {queue_directory} (or run that service unchrooted)"
        )
    return "/" + path.removeprefix(root)


def postfix_milter(spec: str, chrooted: bool, queue_directory: str, what: str = "[milter] socket") -> str:
    """libmilter's socket syntax in Postfix's: `inet:PORT@HOST` -> `inet:HOST:PORT`, unix paths chrooted."""
    path = milterd.socket_path(spec)
    if path is not None:
        return "unix:" + postfix_path(str(path), chrooted, queue_directory, what)
    port, _, host = spec.removeprefix("inet:").partition("@")
    return f"inet:{host or '127.0.0.1'}:{port}"


def lmtp_nexthop(listen: str, chrooted: bool, queue_directory: str) -> str:
    """`[lmtp] listen` as a transport_maps value for Postfix's lmtp client."""
    if listen.startswith("unix:"):
        path = postfix_path(listen.removeprefix("unix:"), chrooted, queue_directory, "[lmtp] listen")
        return f"lmtp:unix:{path}"
    host, _, port = listen.rpartition(":")
    return f"lmtp:[{host.strip('[]')}]:{port}"


def _ere(text: str) -> str:
    return _ERE_SPECIAL.sub(r"\\\1", text)


# -- main.cf text ---------------------------------------------------------------------------------------


def _parameter_spans(lines: list[str]) -> dict[str, tuple[int, int]]:
    """name -> (first line, last line) of its last definition, as Postfix reads main.cf: a logical line
    starts at a line that does not begin with white space; lines that do continue it; blank and comment
    lines in between are skipped."""
    spans: dict[str, tuple[int, int]] = {}
    name: str | None = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace():
            if name is not None:
                spans[name] = (spans[name][0], index)
            continue
        name = line.split("=", 1)[0].strip() if "=" in line else None
        if name is not None:
            spans[name] = (index, index)
    return spans


def set_parameters(text: str, values: Mapping[str, str]) -> str:
    """main.cf with each `name = value` set: in place of the parameter's last definition when there is
    one, else appended under our mark. Every other line is kept byte for byte."""
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    spans = _parameter_spans(lines)
    added: list[str] = []
    # Replace from the bottom up so that earlier spans stay valid.
    for name, value in sorted(values.items(), key=lambda kv: -spans.get(kv[0], (-1, -1))[0]):
        if name in spans:
            first, last = spans[name]
            lines[first : last + 1] = [f"{name} = {value}{newline}"]
        else:
            added.append(f"{name} = {value}{newline}")
    if added:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += newline
        lines += [newline, MARK + newline, *sorted(added)]
    return "".join(lines)


# -- the merge ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Merge:
    parameters: dict[str, str]  # main.cf parameters to set (only those that change)
    master_cf: str
    tables: dict[str, str]  # generated table file name -> content
    notes: tuple[str, ...]


def _chroot(current: Current, command: str, ours: frozenset[tuple[str, str]] = frozenset()) -> bool:
    """Whether the services running `command` are chrooted; refuses a mix (one path cannot serve both).
    `ours`: services the routed set-up added (unchrooted, with full paths): not the operator's."""
    running = [s for s in current.services if s.command.split()[0] == command]
    # A listener with milters of its own (an amavis re-injection port: `-o smtpd_milters=`, `no_milters`)
    # never opens the global list's socket: its chroot does not matter.
    flags = {
        s.chroot
        for s in running
        if (s.name, s.type) not in ours
        and "smtpd_milters=" not in s.command
        and "no_milters" not in s.command
    }
    if len(flags) > 1:
        raise SetupError(
            f"master.cf runs {command} both chrooted and not: a socket path cannot be right for both; "
            "give those services the same chroot column"
        )
    return flags.pop() if flags else False


def _has_milter(value: str, address: str) -> bool:
    return any(milter_address(item) == address for item in list_items(value))


def merge_milters(
    current: Current, address_smtpd: str, address_cleanup: str, routed: bool = False
) -> dict[str, str]:
    """The milter lists with ours appended, the operator's milters first and unchanged (routed: not on
    smtpd_milters, so a `$smtpd_milters` in non_smtpd_milters does not bring ours and ours is appended)."""
    changes: dict[str, str] = {}
    raw, expanded = current.raw, current.expanded
    if not routed and not _has_milter(expanded["smtpd_milters"], address_smtpd):
        changes["smtpd_milters"] = _append(raw["smtpd_milters"], milter_entry(address_smtpd))
    refers = not routed and re.search(r"\$\{?smtpd_milters\}?", raw["non_smtpd_milters"]) is not None
    if refers and address_smtpd != address_cleanup:
        raise SetupError(
            "non_smtpd_milters = $smtpd_milters, but smtpd and cleanup see the milter socket at different "
            "paths (one is chrooted): give them the same chroot column in master.cf"
        )
    if not refers and not _has_milter(expanded["non_smtpd_milters"], address_cleanup):
        changes["non_smtpd_milters"] = _append(raw["non_smtpd_milters"], milter_entry(address_cleanup))
    return changes


def merge_routing(current: Current, wanted: Wanted) -> dict[str, str]:
    """relay_domains, transport_maps, the recipient check (and relay_recipient_maps when it is used)."""
    domain = wanted.bounce_domain
    raw, expanded = current.raw, current.expanded
    for name in ("mydestination", "virtual_alias_domains", "virtual_mailbox_domains"):
        if domain in (item.lower() for item in list_items(expanded[name])):
            raise SetupError(
                f"the bounce domain {domain} is in {name}: it must be a domain of its own that only "
                "bouncekeeper receives (e.g. bounces.example.org), routed to it by relay_domains"
            )
    changes: dict[str, str] = {}
    if domain not in (item.lower() for item in list_items(expanded["relay_domains"])):
        changes["relay_domains"] = (
            _append(raw["relay_domains"], domain) if expanded["relay_domains"] else domain
        )
    transport = f"texthash:{current.config_dir / TRANSPORT_TABLE}"
    if transport not in list_items(raw["transport_maps"]):
        changes["transport_maps"] = _prepend(transport, raw["transport_maps"])
    access = f"regexp:{current.config_dir / RECIPIENT_TABLE}"
    restrictions = raw["smtpd_recipient_restrictions"]
    if access not in list_items(restrictions):
        changes["smtpd_recipient_restrictions"] = _prepend(f"check_recipient_access {access}", restrictions)
    # postmaster@ the bounce domain must reach a person (RFC 5321 section 4.5.1), not the LMTP listener:
    # an alias to the operator's own postmaster (unqualified: Postfix appends $myorigin).
    virtual = f"texthash:{current.config_dir / VIRTUAL_TABLE}"
    if virtual not in list_items(raw["virtual_alias_maps"]):
        changes["virtual_alias_maps"] = _prepend(virtual, raw["virtual_alias_maps"])
    # With relay_recipient_maps set, Postfix refuses relay_domains recipients it does not list; our table
    # names the bounce domain's addresses only, so the operator's other domains are untouched.
    relay_maps = raw["relay_recipient_maps"]
    if expanded["relay_recipient_maps"].strip() and access not in list_items(relay_maps):
        changes["relay_recipient_maps"] = _prepend(access, relay_maps)
    return changes


def tables(wanted: Wanted, nexthop: str) -> dict[str, str]:
    """The generated tables: the bounce domain's transport, and which of its local parts exist."""
    head = f"# Generated by `bouncekeeper setup postfix` from {wanted.source}: edit that, run it again.\n"
    domain = _ere(wanted.bounce_domain)
    # Routed: the VERP local parts and the protected addresses ask the policy service (its class).
    verp = postfix_routed.CLASS if wanted.routed else "DUNNO"
    protected = "".join(f"/^{_ere(a)}$/\t{postfix_routed.CLASS}\n" for a in wanted.protected if wanted.routed)
    access = (
        f"{head}"
        "# postmaster@ the bounce domain is accepted (bouncekeeper_virtual sends it to your postmaster),\n"
        "# the VERP local parts are bounces for bouncekeeper, any other local part is refused.\n"
        f"/^postmaster@{domain}$/\tDUNNO\n"
        f"/^{_ere(wanted.local_prefix)}\\+[^@]+@{domain}$/\t{verp}\n"
        f"/@{domain}$/\t550 5.1.1 Not a bounce address of this host\n"
        f"{protected}"
    )
    return {
        TRANSPORT_TABLE: f"{head}{wanted.bounce_domain}\t{nexthop}\n",
        RECIPIENT_TABLE: access,
        VIRTUAL_TABLE: f"{head}postmaster@{wanted.bounce_domain}\tpostmaster\n",
    }


def macro_notes(current: Current) -> list[str]:
    """Postfix's default macro lists send what the milter asks for; say so when they were narrowed."""
    notes = []
    for name, macro in (("milter_connect_macros", "{daemon_name}"), ("milter_mail_macros", "{auth_authen}")):
        if macro not in current.expanded[name].split():
            notes.append(
                f"{name} does not send {macro}: the milter cannot tell outbound mail by it; add {macro} "
                f"to {name} (the setting is global, so the installer leaves it to you)"
            )
    return notes


def merge(current: Current, wanted: Wanted) -> Merge:
    """Everything the installer changes, computed from what is there."""
    if current.master_cf is None:
        raise SetupError(f"{current.config_dir / 'master.cf'}: missing: is this a Postfix configuration?")
    queue = current.expanded["queue_directory"]
    ours: frozenset[tuple[str, str]] = frozenset()
    if wanted.routed:
        transport, listener = postfix_routed.filter_parts(wanted.policy_filter)
        ours = frozenset({(transport, "unix"), (listener, "inet")})
    smtpd = postfix_milter(wanted.milter_socket, _chroot(current, "smtpd", ours), queue)
    cleanup = postfix_milter(wanted.milter_socket, _chroot(current, "cleanup"), queue)
    master = (current.master_cf or b"").decode("utf-8", "surrogateescape")
    added = ""
    has_lmtp = any(s.name == "lmtp" and s.type == "unix" for s in current.services)
    lmtp_chroot = any(s.chroot for s in current.services if s.name == "lmtp" and s.type == "unix")
    if not has_lmtp:
        added += LMTP_SERVICE
    nexthop = lmtp_nexthop(wanted.lmtp_listen, lmtp_chroot, queue)
    parameters = merge_milters(current, smtpd, cleanup, wanted.routed) | merge_routing(current, wanted)
    if wanted.routed:
        routed, master, services = _merge_routed(current, wanted, master, ours)
        parameters |= routed
        added += services
    if added:
        if master and not master.endswith("\n"):
            master += "\n"
        master += f"{MARK}\n{added}"
    return Merge(parameters, master, tables(wanted, nexthop), tuple(macro_notes(current)))


def _merge_routed(
    current: Current, wanted: Wanted, master: str, ours: frozenset[tuple[str, str]]
) -> tuple[dict[str, str], str, str]:
    """The routed set-up's parameters, master.cf with the application listeners' line, and the services
    to add (postfix_routed)."""
    if not wanted.policy_socket:
        raise SetupError("--routed needs [milter] policy_socket (the policy service the MX asks)")
    queue = current.expanded["queue_directory"]
    chrooted = _chroot(current, "smtpd", ours)
    policy = postfix_milter(wanted.policy_socket, chrooted, queue, "[milter] policy_socket")
    changes = {postfix_routed.CLASS: postfix_routed.policy_class(policy)}
    classes = current.raw["smtpd_restriction_classes"]
    if postfix_routed.CLASS not in list_items(classes):
        changes["smtpd_restriction_classes"] = _append(classes, postfix_routed.CLASS)
    if wanted.app_services:
        own = {postfix_routed.own_milters(master, service) for service in wanted.app_services}
        if len(own) > 1:
            raise SetupError("the --app-service listeners have different smtpd_milters: set up one at a time")
        base = own.pop()
        base = current.raw["smtpd_milters"] if base is None else base
        entry = milter_entry(postfix_milter(wanted.milter_socket, chrooted, queue))
        changes[postfix_routed.APP_MILTERS] = _append(base, entry)
        master = postfix_routed.app_listeners(master, wanted.app_services)
    # The after-queue listener is ours, unchrooted: the milter's own path.
    after_queue = postfix_milter(wanted.milter_socket, False, queue)
    names = {(s.name, s.type) for s in current.services}
    return changes, master, postfix_routed.services(names, wanted.policy_filter, after_queue)


def notes(wanted: Wanted, myhostname: str) -> tuple[str, ...]:
    """What the operator must do by hand (docs/postfix.md, "By hand")."""
    domain = wanted.bounce_domain
    return (
        f"DNS: give {domain} an MX record naming this host ({domain}. IN MX 10 {myhostname}.), so that "
        "remote servers deliver bounces here.",
        f"SPF: VERP mail leaves with a MAIL FROM in {domain}; publish an SPF record for it that lists this "
        f'host ({domain}. IN TXT "v=spf1 a:{myhostname} -all").',
        f"DMARC: with relaxed SPF alignment (the default) {domain} aligns with the From: domain when both "
        "share the organizational domain (bounces.example.org for example.org); under aspf=s rely on DKIM.",
        "Start `bouncekeeper milter` and `bouncekeeper lmtp` before Postfix reloads (the sockets above).",
    )


def build(current: Current, wanted: Wanted) -> plan.Plan:
    """The plan: main.cf, master.cf and the two tables, each as its whole new text."""
    merged = merge(current, wanted)
    main_text = (current.main_cf or b"").decode("utf-8", "surrogateescape")
    main_after = set_parameters(main_text, merged.parameters) if merged.parameters else main_text
    edits = [
        plan.FileEdit(
            current.config_dir / "main.cf",
            current.main_cf,
            main_after.encode("utf-8", "surrogateescape"),
        ),
        plan.FileEdit(
            current.config_dir / "master.cf",
            current.master_cf,
            merged.master_cf.encode("utf-8", "surrogateescape"),
        ),
    ]
    for name, text in merged.tables.items():
        edits.append(plan.FileEdit(current.config_dir / name, current.tables.get(name), text.encode()))
    myhostname = current.expanded.get("myhostname", "") or "this.host.example"
    return plan.Plan(tuple(edits), merged.notes + notes(wanted, myhostname))
