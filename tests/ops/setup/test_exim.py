"""`bouncekeeper setup exim`'s merge functions over configuration texts.

No Exim here: tests/mta/test_setup_exim.py runs the real one on what they produce."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bouncekeeper import cli, config
from bouncekeeper.ops.setup import exim
from bouncekeeper.ops.setup.route import Listener, SetupError, from_settings
from tests.support.logs import restore_logging  # noqa: F401 - autouse: cli.main reconfigures logging
from tests.support.mta_config import SETUP_ROUTE as ROUTE

SITE = """primary_hostname = mx.example.org
domainlist local_domains = @ : example.org
acl_smtp_rcpt = check_rcpt
acl_smtp_data = check_data

begin acl

check_rcpt:
  accept  domains = +local_domains
          verify = recipient
  deny    message = relay not permitted

check_data:
  warn    add_header = X-Site: yes
  accept

begin routers

dnslookup:
  driver = dnslookup
  domains = ! +local_domains
  transport = remote_smtp
  no_more

begin transports

remote_smtp:
  driver = smtp
"""


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_the_single_file_keeps_every_line_of_the_operator_in_order() -> None:
    merged = exim.merge_single(SITE, ROUTE)
    it = iter(_lines(merged))
    assert all(line in it for line in _lines(SITE))  # a subsequence: nothing replaced or moved
    assert exim.unmerge(merged) == SITE


def test_the_single_file_merge_is_idempotent() -> None:
    once = exim.merge_single(SITE, ROUTE)
    assert exim.merge_single(once, ROUTE) == once


def test_blocks_go_to_the_top_of_each_acl_and_before_the_first_router_and_transport() -> None:
    merged = exim.merge_single(SITE, ROUTE)
    assert re.search(
        r"check_rcpt:\n  # BEGIN bouncekeeper\n(.*\n)*?  accept  domains = \+bounce_domains", merged
    )
    assert re.search(r"check_data:\n  # BEGIN bouncekeeper\n(.*\n)*?  discard condition", merged)
    assert merged.index("bouncekeeper_bounces:") < merged.index("dnslookup:")
    assert merged.index("bouncekeeper_lmtp:") < merged.index("remote_smtp:")
    assert merged.index("BK_BOUNCE_DOMAIN = bounce.example.net") < merged.index("begin acl")


def test_a_changed_toml_replaces_only_bouncekeepers_blocks() -> None:
    once = exim.merge_single(SITE, ROUTE)
    other = dataclasses.replace(ROUTE, bounce_domain="b.example.com")
    again = exim.merge_single(once, other)
    assert "BK_BOUNCE_DOMAIN = b.example.com" in again
    assert "bounce.example.net" not in again
    assert exim.unmerge(again) == SITE


def test_without_a_data_acl_ours_is_added_and_only_guards_loops() -> None:
    site = SITE.replace("acl_smtp_data = check_data\n", "")
    merged = exim.merge_single(site, ROUTE)
    assert "acl_smtp_data = bouncekeeper_check_data" in merged
    assert re.search(r"bouncekeeper_check_data:\n(.*\n)*?  accept\n# END bouncekeeper", merged)


def test_an_acl_named_through_a_macro_is_found_as_in_debians_template() -> None:
    site = SITE.replace(
        "acl_smtp_data = check_data",
        ".ifndef MAIN_ACL_CHECK_DATA\nMAIN_ACL_CHECK_DATA = check_data\n.endif\n"
        "acl_smtp_data = MAIN_ACL_CHECK_DATA",
    )
    assert re.search(r"check_data:\n  # BEGIN bouncekeeper", exim.merge_single(site, ROUTE))


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        ("begin routers\n", "no 'begin routers' section"),
        ("acl_smtp_rcpt = check_rcpt\n", "no acl_smtp_rcpt"),
        ("check_rcpt:\n", "names check_rcpt, which is not defined"),
    ],
)
def test_a_configuration_it_cannot_merge_into_is_refused_with_the_reason(cut: str, message: str) -> None:
    with pytest.raises(SetupError, match=message):
        exim.merge_single(SITE.replace(cut, ""), ROUTE)


def test_no_listed_sender_means_no_verp_router_and_a_tcp_listener_means_the_smtp_transport() -> None:
    route = dataclasses.replace(ROUTE, senders=(), listener=Listener(host="127.0.0.1", port=8024))
    merged = exim.merge_single(SITE, route)
    assert "bouncekeeper_verp" not in merged
    assert "BK_SENDERS" not in merged
    assert "BK_LMTP_HOST = 127.0.0.1\nBK_LMTP_PORT = 8024" in merged
    assert "transport = bouncekeeper_lmtp_tcp" in merged
    assert "protocol = lmtp" in merged


def test_sender_patterns_become_an_exim_address_list() -> None:
    listed = exim.address_list(("app@example.org", "*@news.example.org", "n?ws*@x.org"))
    assert listed == r"app@example.org : *@news.example.org : \N^(?i)n.ws.*@x\.org$\N"


def test_the_key_is_trimmed_of_white_space_as_bouncekeeper_trims_it() -> None:
    # ${readfile} without an eol argument keeps the file's CR and LF; the sg trims both ends.
    assert r"BK_SECRET = ${sg{${readfile{BK_KEYFILE}}}{\N^\s+|\s+$\N}{}}" in exim.macros(ROUTE)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("dc_relay_domains=''\n", "dc_relay_domains='bounce.example.net'\n"),
        (
            "dc_relay_domains='a.example;b.example'\n",
            "dc_relay_domains='a.example;b.example;bounce.example.net'\n",
        ),
        (
            "dc_relay_domains='a.example : b.example'\n",
            "dc_relay_domains='a.example:b.example:bounce.example.net'\n",
        ),
        ("dc_relay_domains='Bounce.Example.NET'\n", "dc_relay_domains='Bounce.Example.NET'\n"),
        ("dc_other_hostnames='x'", "dc_other_hostnames='x'\ndc_relay_domains='bounce.example.net'\n"),
        # Sourced as shell: hand-written quoting is merged into too, and the last assignment is the one.
        ('dc_relay_domains="a.example"\n', 'dc_relay_domains="a.example;bounce.example.net"\n'),
        ("dc_relay_domains=a.example\n", "dc_relay_domains=a.example:bounce.example.net\n"),
        (
            "dc_relay_domains='a.example'\ndc_relay_domains='b.example'\n",
            "dc_relay_domains='a.example'\ndc_relay_domains='b.example;bounce.example.net'\n",
        ),
    ],
)
def test_the_bounce_domain_is_added_to_debians_relay_domains(before: str, after: str) -> None:
    assert exim.add_relay_domain(before, "bounce.example.net") == after


def test_an_operators_own_data_acl_file_is_kept_and_includes_ours_first() -> None:
    files = {"conf.d/main/00_local": "CHECK_DATA_LOCAL_ACL_FILE = CONFDIR/site_data_acl\n"}
    assert exim.operator_hook(files) == "site_data_acl"
    assert exim.operator_hook({}) is None
    new = exim.split_files(ROUTE, operator_hook=True)
    assert "CHECK_DATA_LOCAL_ACL_FILE" not in new[exim.MAIN_FILE]
    included = exim.include_in_hook("warn add_header = X: y\n")
    assert included.startswith("# BEGIN bouncekeeper\n.include CONFDIR/bouncekeeper_check_data\n")
    assert exim.include_in_hook(included) == included


def test_the_split_layout_is_new_files_in_debians_order() -> None:
    new = exim.split_files(ROUTE, operator_hook=False)
    assert sorted(new) == sorted(
        [exim.MAIN_FILE, exim.ROUTER_FILE, exim.TRANSPORT_FILE, exim.CHECK_DATA_FILE]
    )
    assert "CHECK_DATA_LOCAL_ACL_FILE = CONFDIR/bouncekeeper_check_data" in new[exim.MAIN_FILE]
    assert int(Path(exim.ROUTER_FILE).name.split("_")[0]) < 200  # before Debian's primary router


def test_values_come_from_the_toml_file_and_a_missing_one_is_named() -> None:
    settings = config.loads(
        '[verp]\nbounce_domain = "Bounce.Example.NET."\nsecret_files = ["/k"]\n'
        'senders = ["App@Example.org"]\n'
        '[lmtp]\nlisten = "unix:/run/bk.sock"\n',
        name="bk.toml",
    )
    route = from_settings(settings)
    assert (route.bounce_domain, route.key_file, route.senders) == (
        "bounce.example.net",
        "/k",
        ("app@example.org",),
    )
    assert route.listener == Listener(socket="/run/bk.sock")
    with pytest.raises(SetupError, match=r"bk\.toml: verp\.bounce_domain: required"):
        from_settings(config.loads('[verp]\nsecret_files = ["/k"]\n', name="bk.toml"))
    bad = config.loads(
        '[verp]\nbounce_domain = "b.example"\nsecret_files = ["/k"]\nsenders = ["a b@x"]\n', name="bk.toml"
    )
    with pytest.raises(SetupError, match=r"verp\.senders: 'a b@x' cannot be written"):
        from_settings(bad)


def test_undo_without_an_earlier_apply_says_so_and_touches_nothing(tmp_path: Path) -> None:
    conf = tmp_path / "bk.toml"
    conf.write_text(f'state_dir = "{tmp_path}"\n')
    (tmp_path / "exim4.conf").write_text(SITE)
    argv = ["--config", str(conf), "setup", "exim", "--exim-config", str(tmp_path / "exim4.conf"), "--undo"]
    assert cli.main(argv) == 1
    assert (tmp_path / "exim4.conf").read_text() == SITE


# --- the installer's text against the files the repository ships (exim/) ------------------------------
# The same routers, transports, VERP macros and loop guard exist twice: generated by `setup exim` and
# written out for operators who merge by hand. These tests hold the two in step, option for option.

SHIPPED = Path(__file__).resolve().parents[3] / "exim"


def _preprocess(text: str, defined: set[str]) -> list[str]:
    """Exim's .ifdef/.ifndef/.else/.endif resolved for the macros `defined`; comments, blank lines and
    debug_print options (tracing only) dropped; continued lines kept as they are."""
    active: list[bool] = []
    out = []
    for line in text.splitlines():
        directive = re.match(r"^\.(ifdef|ifndef|else|endif)\b\s*(\S*)", line)
        if directive is not None:
            word, name = directive.groups()
            if word in ("ifdef", "ifndef"):
                active.append((name in defined) == (word == "ifdef"))
            elif word == "else":
                active[-1] = not active[-1]
            else:
                active.pop()
            continue
        stripped = line.strip()
        if (
            all(active)
            and stripped
            and not stripped.startswith("#")
            and not stripped.startswith("debug_print")
        ):
            out.append(line.rstrip())
    return out


def _drivers(lines: list[str]) -> dict[str, list[str]]:
    """Each router or transport by name: its option lines, in order."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        named = re.fullmatch(r"(\w+):", line)
        if named is not None:
            current = found.setdefault(named.group(1), [])
        elif line.startswith(" ") and current is not None:
            current.append(line.strip())
        else:
            current = None
    return found


def _section(text: str, name: str) -> str:
    return re.split(r"^begin \w+$", text.split(f"\nbegin {name}\n", 1)[1], flags=re.MULTILINE)[0]


LISTENERS = {
    "BK_LMTP_SOCKET": Listener(socket="/run/bouncekeeper/lmtp.sock"),
    "BK_LMTP_HOST": Listener(host="127.0.0.1", port=8024),
}


def _differences(generated: str, shipped: str, macro: str) -> list[str]:
    """How bouncekeeper's routers and transports in `shipped` differ from the installer's `generated`:
    names missing or extra, their order (Exim tries routers in order: postmaster@ the bounce domain must
    be redirected before bouncekeeper_unknown fails it), and each one's options. Drivers of the site's
    own (the example's dnslookup, remote_smtp) are not bouncekeeper's business."""
    ours = _drivers(_preprocess(generated, set()))
    theirs = {
        name: options
        for name, options in _drivers(_preprocess(shipped, {macro})).items()
        if name.startswith("bouncekeeper_")
    }
    found = [f"{name} missing" for name in ours if name not in theirs]
    found += [f"{name} is not the installer's" for name in theirs if name not in ours]
    if not found and list(theirs) != list(ours):
        found.append(f"order {list(theirs)}, the installer's {list(ours)}")
    found += [f"{name} differs" for name in ours if name in theirs and theirs[name] != ours[name]]
    return found


def _installer(macro: str) -> str:
    route = dataclasses.replace(ROUTE, listener=LISTENERS[macro])
    return exim.routers(route) + exim.transports(route)


def _shipped_drivers() -> dict[str, str]:
    example = (SHIPPED / "exim4.conf.example").read_text()
    return {
        "conf.d": (SHIPPED / "conf.d/router/170_bouncekeeper").read_text()
        + (SHIPPED / "conf.d/transport/30_bouncekeeper").read_text(),
        "exim4.conf.example": _section(example, "routers") + _section(example, "transports"),
    }


@pytest.mark.parametrize("macro", sorted(LISTENERS))
def test_the_installers_routers_and_transports_are_the_shipped_ones(macro: str) -> None:
    for where, text in _shipped_drivers().items():
        assert _differences(_installer(macro), text, macro) == [], where


def test_a_shipped_router_missing_moved_or_changed_is_a_difference() -> None:
    # The defect this check once let through: the shipped files without bouncekeeper_postmaster (it was
    # exempted by name), so they refused postmaster@ the bounce domain while the installer accepted it.
    shipped = _shipped_drivers()["conf.d"]
    block = re.search(r"^bouncekeeper_postmaster:\n(  .*\n)+", shipped, re.MULTILINE)
    assert block is not None
    without = shipped.replace(block.group(0), "")
    assert _differences(_installer("BK_LMTP_SOCKET"), without, "BK_LMTP_SOCKET") == [
        "bouncekeeper_postmaster missing"
    ]
    moved = without.replace("bouncekeeper_verp:\n", block.group(0) + "\nbouncekeeper_verp:\n")
    assert _differences(_installer("BK_LMTP_SOCKET"), moved, "BK_LMTP_SOCKET") == [
        "order ['bouncekeeper_bounces', 'bouncekeeper_unknown', 'bouncekeeper_postmaster', "
        "'bouncekeeper_verp', 'bouncekeeper_lmtp'], the installer's ['bouncekeeper_bounces', "
        "'bouncekeeper_postmaster', 'bouncekeeper_unknown', 'bouncekeeper_verp', 'bouncekeeper_lmtp']"
    ]
    changed = shipped.replace("local_parts = postmaster : abuse", "local_parts = postmaster")
    assert _differences(_installer("BK_LMTP_SOCKET"), changed, "BK_LMTP_SOCKET") == [
        "bouncekeeper_postmaster differs"
    ]
    extra = shipped + "bouncekeeper_other:\n  driver = accept\n"
    assert _differences(_installer("BK_LMTP_SOCKET"), extra, "BK_LMTP_SOCKET") == [
        "bouncekeeper_other is not the installer's"
    ]


def _from(lines: list[str], first: str, last: str) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(first))
    end = next(i for i, line in enumerate(lines) if i >= start and line.strip().startswith(last))
    return [line.strip() for line in lines[start : end + 1]]


def test_the_installers_verp_macros_are_the_shipped_ones() -> None:
    generated = _from(_preprocess(exim.macros(ROUTE), set()), "BK_BODY", "domainlist bounce_domains")
    for name in ("conf.d/main/01_bouncekeeper_macros", "exim4.conf.example"):
        shipped = _preprocess((SHIPPED / name).read_text(), {"BK_LMTP_SOCKET"})
        assert _from(shipped, "BK_BODY", "BK_FITS") == generated[:-1], name
        assert generated[-1] in shipped, name
    # docs/verp.md shows "the heart" of it: the same lines.
    doc = (SHIPPED.parent / "docs" / "verp.md").read_text().split("## Signing in Exim", 1)[1]
    assert _from(_preprocess(doc.split("```")[1], set()), "BK_BODY", "BK_FITS") == generated[:-1]


def test_the_installers_loop_guard_is_the_shipped_one() -> None:
    generated = _from(_preprocess(exim.LOOP_GUARD, set()), "discard", "log_message")
    assert (
        _from(_preprocess((SHIPPED / "bouncekeeper_check_data").read_text(), set()), "discard", "log_message")
        == generated
    )
    example = _preprocess(_section((SHIPPED / "exim4.conf.example").read_text(), "acl"), set())
    assert _from(example, "discard", "log_message") == generated
