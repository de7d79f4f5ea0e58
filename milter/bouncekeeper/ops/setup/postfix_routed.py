"""`bouncekeeper setup postfix --routed`: the routed set-up (no milter on the MX's SMTP sessions), merged.

Instead of appending the milter to `smtpd_milters`, Postfix decides per recipient with its own tables which
mail meets bouncekeeper (postfix/README.md, "The routed set-up", says why and what it costs):
- the recipient access table (generated, first in `smtpd_recipient_restrictions`) sends the bounce
  domain's VERP local parts and the protected addresses to a restriction class `bouncekeeper`, which asks
  the policy service (`[milter] policy_socket`): FILTER for a valid VERP address or a protected one,
  550 5.7.1 for a forged one in enforce mode;
- FILTER (`[milter] policy_filter`) names a transport and an after-queue listener on loopback that have
  the milter; both are added to master.cf next to the operator's services, never in place of one;
- the application's listeners (`--app-service submission/inet ...`) get one `-o smtpd_milters=` line
  appended that names `$bouncekeeper_milters`: their own milters, then ours;
- `non_smtpd_milters` gets ours as in the inline set-up (sendmail(1) submissions get VERP).
Pure functions over text and values, like `postfix_merge`.
"""

from __future__ import annotations

from bouncekeeper.ops.setup.route import SetupError

CLASS = "bouncekeeper"  # the restriction class the access table names
APP_MILTERS = "bouncekeeper_milters"  # main.cf: the application listeners' milter list
_APP_LINE = f"  -o smtpd_milters=${APP_MILTERS}"
# The after-queue listener (postfix/routed/master.cf.snippet says why each option is there).
_AFTER_QUEUE_OPTIONS = (
    "milter_macro_daemon_name=bouncekeeper-after-queue",
    # A dead milter: 4xx, the message stays in our queue (the loop guard must see protected mail).
    "milter_default_action=tempfail",
    "content_filter=",
    "smtpd_milter_maps=",
    "smtpd_client_restrictions=",
    "smtpd_helo_restrictions=",
    "smtpd_sender_restrictions=",
    "smtpd_recipient_restrictions=",
    "smtpd_relay_restrictions=permit_mynetworks,reject",
    "smtpd_data_restrictions=",
    "smtpd_end_of_data_restrictions=",
    "mynetworks=127.0.0.0/8",
    "smtpd_authorized_xforward_hosts=127.0.0.0/8",
    "receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_address_mappings",
)


def policy_class(policy: str) -> str:
    """The restriction class: the policy service, 4xx for these recipients only while it is down."""
    return f"check_policy_service {{ {policy}, default_action=DEFER_IF_PERMIT, timeout=30s }}"


def filter_parts(policy_filter: str) -> tuple[str, str]:
    """`transport:[host]:port` -> (transport, the listener's master.cf name `host:port`)."""
    transport, _, nexthop = policy_filter.partition(":")
    host, _, port = nexthop.rpartition(":")
    if not (host.startswith("[") and host.endswith("]") and port.isdigit()):
        raise SetupError(
            f"[milter] policy_filter = {policy_filter!r}: the routed set-up needs TRANSPORT:[HOST]:PORT "
            "(the after-queue listener it adds listens there)"
        )
    return transport, f"{host.strip('[]')}:{port}"


def services(names: set[tuple[str, str]], policy_filter: str, milter: str) -> str:
    """master.cf text for the transport and listener FILTER names, for those not there yet."""
    transport, listener = filter_parts(policy_filter)
    out = []
    if (transport, "unix") not in names:
        out += [
            f"{transport} unix - - n - 10 smtp",
            "  -o smtp_send_xforward_command=yes",
            "  -o disable_mime_output_conversion=yes",
        ]
    if (listener, "inet") not in names:
        out += [f"{listener} inet n - n - 10 smtpd", f"  -o smtpd_milters={milter}"]
        out += [f"  -o {option}" for option in _AFTER_QUEUE_OPTIONS]
    return "\n".join(out) + "\n" if out else ""


def _block(lines: list[str], name: str, kind: str) -> tuple[int, int] | None:
    """(first, last) line of a master.cf service entry: its line and the indented lines after it."""
    for index, line in enumerate(lines):
        fields = line.split()
        if line[:1].strip() and len(fields) > 1 and (fields[0], fields[1]) == (name, kind):
            last = index
            for later in range(index + 1, len(lines)):
                stripped = lines[later].strip()
                if stripped and not lines[later][0].isspace():
                    break
                if stripped and not stripped.startswith("#"):
                    last = later
            return index, last
    return None


def own_milters(master: str, service: str) -> str | None:
    """The service's own `-o smtpd_milters=` value (the operator's, not ours), None when it has none."""
    lines = master.splitlines()
    name, _, kind = service.partition("/")
    span = _block(lines, name, kind)
    if span is None:
        raise SetupError(f"--app-service {service}: no such service in master.cf")
    found = None
    for line in lines[span[0] + 1 : span[1] + 1]:
        words = line.split()
        ours = line.rstrip() == _APP_LINE
        if len(words) == 2 and words[0] == "-o" and words[1].startswith("smtpd_milters=") and not ours:
            found = words[1].removeprefix("smtpd_milters=")
    return found


def app_listeners(master: str, app_services: tuple[str, ...]) -> str:
    """master.cf with `-o smtpd_milters=$bouncekeeper_milters` after each application listener's own lines."""
    lines = master.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    for service in app_services:
        name, _, kind = service.partition("/")
        span = _block([line.rstrip("\r\n") for line in lines], name, kind)
        if span is None:
            raise SetupError(f"--app-service {service}: no such service in master.cf")
        block = [line.rstrip("\r\n") for line in lines[span[0] : span[1] + 1]]
        if _APP_LINE in block:
            continue
        if not lines[span[1]].endswith("\n"):
            lines[span[1]] += newline
        lines.insert(span[1] + 1, _APP_LINE + newline)
    return "".join(lines)
