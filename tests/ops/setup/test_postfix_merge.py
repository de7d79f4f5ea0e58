"""The Postfix merge (setup/postfix_merge.py) as pure functions over what postconf reports, and the command
against a real `postconf`/`postfix check` on a scratch configuration directory."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bouncekeeper.ops.setup import postfix_merge as postfix
from bouncekeeper.ops.setup.route import SetupError
from tests.support.postfix import ROOT, have_postfix

DIR = Path("/etc/postfix")
WANTED = postfix.Wanted(
    source="/etc/bouncekeeper/bouncekeeper.toml",
    bounce_domain="bounces.example.org",
    local_prefix="bounces",
    milter_socket="unix:/var/spool/postfix/bouncekeeper/milter.sock",
    lmtp_listen="unix:/var/spool/postfix/bouncekeeper/lmtp.sock",
)
DEBIAN_SERVICES = (
    postfix.Service("smtp", "inet", True, "smtpd"),
    postfix.Service("submission", "inet", True, "smtpd -o smtpd_sasl_auth_enable=yes"),
    postfix.Service("cleanup", "unix", True, "cleanup"),
    postfix.Service("lmtp", "unix", True, "lmtp"),
)
DEFAULTS = {name: "" for name in postfix.READ} | {
    "queue_directory": "/var/spool/postfix",
    "milter_connect_macros": "j {daemon_name} {daemon_addr} v _",
    "milter_mail_macros": "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
    "myhostname": "mx.example.org",
    "mydestination": "mx.example.org, localhost",
}


def current(raw: dict[str, str], expanded: dict[str, str] | None = None, **kw: object) -> postfix.Current:
    values = DEFAULTS | raw
    fields: dict[str, object] = {
        "config_dir": DIR,
        "main_cf": b"",
        "master_cf": b"smtp inet n - y - - smtpd\n",
        "raw": values,
        "expanded": values | (expanded or {}),
        "services": DEBIAN_SERVICES,
        "tables": {},
    }
    fields.update(kw)
    return postfix.Current(**fields)  # type: ignore[arg-type]


OURS = "{ unix:/bouncekeeper/milter.sock, default_action=accept, protocol=6 }"


def test_a_milter_list_splits_on_commas_and_spaces_but_keeps_braces_whole() -> None:
    value = "inet:127.0.0.1:8891,  { unix:/x, default_action = tempfail }\n inet:127.0.0.1:8893"
    assert postfix.list_items(value) == [
        "inet:127.0.0.1:8891",
        "{ unix:/x, default_action = tempfail }",
        "inet:127.0.0.1:8893",
    ]
    assert postfix.milter_address("{ unix:/x, default_action = tempfail }") == "unix:/x"


def test_our_milter_is_appended_after_opendkim_with_per_milter_settings_only() -> None:
    now = current({"smtpd_milters": "inet:127.0.0.1:8891", "non_smtpd_milters": "$smtpd_milters"})
    merged = postfix.merge(now, WANTED)
    assert merged.parameters["smtpd_milters"] == f"inet:127.0.0.1:8891, {OURS}"
    # The reference brings ours to non-SMTP mail too: no second copy.
    assert "non_smtpd_milters" not in merged.parameters
    assert not any(name.startswith("milter_") for name in merged.parameters)


def test_a_non_smtpd_list_of_its_own_gets_ours_appended() -> None:
    now = current({"smtpd_milters": "inet:127.0.0.1:8891", "non_smtpd_milters": "inet:127.0.0.1:8891"})
    assert postfix.merge(now, WANTED).parameters["non_smtpd_milters"] == f"inet:127.0.0.1:8891, {OURS}"


def test_a_second_run_on_the_merged_values_changes_nothing() -> None:
    first = current({"smtpd_milters": "inet:127.0.0.1:8891", "non_smtpd_milters": "inet:127.0.0.1:8891"})
    merged = postfix.merge(first, WANTED)
    values = dict(first.raw) | merged.parameters
    services = first.services
    tables = {name: text.encode() for name, text in merged.tables.items()}
    again = postfix.merge(current(values, master_cf=merged.master_cf.encode(), services=services), WANTED)
    assert again.parameters == {}
    change = postfix.build(
        current(values, master_cf=merged.master_cf.encode(), tables=tables, main_cf=b"x = y\n"), WANTED
    )
    assert not change.changes


def test_the_recipient_check_goes_first_and_the_operators_checks_stay() -> None:
    spf = "permit_mynetworks, reject_unauth_destination, check_policy_service unix:private/policy-spf"
    merged = postfix.merge(current({"smtpd_recipient_restrictions": spf}), WANTED)
    access = f"check_recipient_access regexp:{DIR}/bouncekeeper_recipient_access"
    assert merged.parameters["smtpd_recipient_restrictions"] == f"{access}, {spf}"


def test_the_bounce_domain_is_relayed_to_the_lmtp_listener_by_a_generated_table() -> None:
    now = current({"relay_domains": "$mydestination, other.example"}, {"relay_domains": "mx, other.example"})
    merged = postfix.merge(now, WANTED)
    assert merged.parameters["relay_domains"] == "$mydestination, other.example, bounces.example.org"
    assert merged.parameters["transport_maps"] == f"texthash:{DIR}/bouncekeeper_transport"
    # Debian's lmtp client runs chrooted in the queue directory: the path is as it sees it.
    assert merged.tables["bouncekeeper_transport"].endswith(
        "bounces.example.org\tlmtp:unix:/bouncekeeper/lmtp.sock\n"
    )
    assert "/etc/bouncekeeper/bouncekeeper.toml" in merged.tables["bouncekeeper_transport"]
    tcp = postfix.merge(now, replace(WANTED, lmtp_listen="127.0.0.1:8024"))
    assert tcp.tables["bouncekeeper_transport"].endswith("\tlmtp:[127.0.0.1]:8024\n")


def test_an_operators_transport_table_stays_after_ours() -> None:
    merged = postfix.merge(current({"transport_maps": "hash:/etc/postfix/transport"}), WANTED)
    assert (
        merged.parameters["transport_maps"]
        == f"texthash:{DIR}/bouncekeeper_transport, hash:/etc/postfix/transport"
    )


def test_the_access_table_accepts_postmaster_and_verp_local_parts_only() -> None:
    table = postfix.tables(replace(WANTED, local_prefix="bk.r"), "lmtp:unix:/x")[
        "bouncekeeper_recipient_access"
    ]
    rules = [line for line in table.splitlines() if line.startswith("/")]
    assert rules == [
        "/^postmaster@bounces\\.example\\.org$/\tDUNNO",
        "/^bk\\.r\\+[^@]+@bounces\\.example\\.org$/\tDUNNO",
        "/@bounces\\.example\\.org$/\t550 5.1.1 Not a bounce address of this host",
    ]
    virtual = postfix.tables(WANTED, "x")["bouncekeeper_virtual"]
    assert virtual.endswith("postmaster@bounces.example.org\tpostmaster\n")


def test_relay_recipient_maps_is_extended_only_when_the_operator_uses_it() -> None:
    assert "relay_recipient_maps" not in postfix.merge(current({}), WANTED).parameters
    used = current({"relay_recipient_maps": "hash:/etc/postfix/relay_recipients"})
    assert postfix.merge(used, WANTED).parameters["relay_recipient_maps"] == (
        f"regexp:{DIR}/bouncekeeper_recipient_access, hash:/etc/postfix/relay_recipients"
    )


def test_a_bounce_domain_that_is_local_mail_is_refused() -> None:
    with pytest.raises(SetupError, match="mydestination"):
        postfix.merge(current({}, {"mydestination": "bounces.example.org, localhost"}), WANTED)


def test_a_socket_outside_the_chroot_of_a_chrooted_smtpd_is_refused() -> None:
    with pytest.raises(SetupError, match="chrooted"):
        postfix.merge(current({}), replace(WANTED, milter_socket="unix:/run/bouncekeeper/milter.sock"))
    unchrooted = tuple(replace(s, chroot=False) for s in DEBIAN_SERVICES)
    merged = postfix.merge(
        current({}, services=unchrooted), replace(WANTED, milter_socket="unix:/run/bk.sock")
    )
    assert merged.parameters["smtpd_milters"].startswith("{ unix:/run/bk.sock,")
    tcp = postfix.merge(current({}), replace(WANTED, milter_socket="inet:8891@127.0.0.1"))
    assert tcp.parameters["smtpd_milters"].startswith("{ inet:127.0.0.1:8891,")


def test_master_cf_gets_an_lmtp_service_only_when_it_has_none() -> None:
    master = b"smtp      inet  n       -       y       -       -       smtpd\n  -o smtpd_tls_wrappermode=yes"
    without = tuple(s for s in DEBIAN_SERVICES if s.name != "lmtp")
    merged = postfix.merge(current({}, master_cf=master, services=without), WANTED)
    assert merged.master_cf.startswith(master.decode() + "\n")
    assert merged.master_cf.endswith(postfix.LMTP_SERVICE)
    assert postfix.merge(current({}, master_cf=master), WANTED).master_cf == master.decode()


def test_set_parameters_replaces_in_place_and_keeps_every_other_byte() -> None:
    text = (
        "# comment\r\nsmtpd_milters = inet:127.0.0.1:8891,\r\n   inet:127.0.0.1:8893\r\nmyhostname = mx\r\n"
    )
    out = postfix.set_parameters(text, {"smtpd_milters": "a, b", "relay_domains": "bounces.example.org"})
    assert out == (
        "# comment\r\n"
        "smtpd_milters = a, b\r\n"
        "myhostname = mx\r\n"
        "\r\n"
        f"{postfix.MARK}\r\n"
        "relay_domains = bounces.example.org\r\n"
    )


def test_narrowed_macro_lists_are_reported_not_changed() -> None:
    narrowed = current({"milter_connect_macros": "j"})
    change = postfix.build(narrowed, WANTED)
    assert any("milter_connect_macros does not send {daemon_name}" in n for n in change.notes)
    assert any("MX" in n for n in change.notes)


# -- the command, with Postfix's own tools -------------------------------------------------------------

needs_postfix = pytest.mark.skipif(not have_postfix(), reason="needs root and Postfix (scripts/sysdeps.sh)")
MAIN = b"compatibility_level = 3.6\nmyhostname = mx.example.test\nsmtpd_milters = inet:127.0.0.1:8891\n"


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    toml = tmp_path / "bk.toml"
    toml.write_text(
        f'[verp]\nbounce_domain = "bounces.example.org"\nsecret_files = ["{tmp_path}/verp.key"]\n'
        f'[milter]\nsocket = "unix:{tmp_path}/milter.sock"\n[lmtp]\nlisten = "unix:{tmp_path}/lmtp.sock"\n'
    )
    argv = [sys.executable, "-m", "bouncekeeper.cli", "--config", str(toml), "setup", "postfix"]
    argv += ["--config-dir", str(tmp_path / "etc"), "--backup-dir", str(tmp_path / "backup"), *args]
    env = {"PYTHONPATH": str(ROOT / "milter"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=120)


@needs_postfix
def test_setup_postfix_shows_applies_once_and_undoes_byte_for_byte(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_bytes(MAIN)
    master = (
        b"smtp inet n - n - - smtpd\n  -o smtpd_tls_security_level=none\ncleanup unix n - n - 0 cleanup\n"
    )
    (etc / "master.cf").write_bytes(master)
    shown = _cli(tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"+smtpd_milters = inet:127.0.0.1:8891, {{ unix:{tmp_path}/milter.sock," in shown.stdout
    assert "nothing written" in shown.stdout
    assert (etc / "main.cf").read_bytes() == MAIN
    assert sorted(p.name for p in etc.iterdir()) == ["main.cf", "master.cf"]
    applied = _cli(tmp_path, "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "not reloaded" in applied.stdout
    assert (etc / "master.cf").read_text().endswith(postfix.LMTP_SERVICE)
    again = _cli(tmp_path, "--apply")
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout
    undone = _cli(tmp_path, "--undo")
    assert undone.returncode == 0, undone.stderr
    assert (etc / "main.cf").read_bytes() == MAIN
    assert (etc / "master.cf").read_bytes() == master
    assert sorted(p.name for p in etc.iterdir()) == ["main.cf", "master.cf"]


@needs_postfix
def test_a_merge_that_postfix_check_refuses_writes_nothing(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    # A queue directory postfix check cannot use: the staged check fails before any write.
    broken = MAIN + f"queue_directory = {tmp_path}/no/such/queue\nmail_owner = nosuchuser-bk\n".encode()
    (etc / "main.cf").write_bytes(broken)
    (etc / "master.cf").write_bytes(b"smtp inet n - n - - smtpd\n")
    done = _cli(tmp_path, "--apply")
    assert done.returncode == 1
    assert "postfix check refuses" in done.stderr
    assert (etc / "main.cf").read_bytes() == broken
    assert not (tmp_path / "backup").exists()


# -- the routed set-up ------------------------------------------------------------------------------------

ROUTED = replace(
    WANTED,
    routed=True,
    policy_socket="unix:/var/spool/postfix/bouncekeeper/policy.sock",
    policy_filter="bouncekeeper:[127.0.0.1]:10027",
    protected=("app-in@example.org",),
    app_services=("submission/inet",),
)
SUBMISSION = (
    "submission inet n - y - - smtpd\n  -o smtpd_sasl_auth_enable=yes\n"
    "  -o smtpd_milters=inet:127.0.0.1:8891\n"
)


def test_routed_leaves_the_mx_milters_alone_and_asks_the_policy_service_for_bounces() -> None:
    now = current({"smtpd_milters": "inet:127.0.0.1:8891", "non_smtpd_milters": "$smtpd_milters"})
    merged = postfix.merge(replace(now, master_cf=SUBMISSION.encode()), ROUTED)
    assert "smtpd_milters" not in merged.parameters
    # $smtpd_milters no longer brings ours: appended after the reference.
    assert merged.parameters["non_smtpd_milters"] == f"$smtpd_milters, {OURS}"
    assert merged.parameters["bouncekeeper"] == (
        "check_policy_service { unix:/bouncekeeper/policy.sock, default_action=DEFER_IF_PERMIT, timeout=30s }"
    )
    assert merged.parameters["smtpd_restriction_classes"] == "bouncekeeper"
    access = merged.tables["bouncekeeper_recipient_access"]
    assert "/^bounces\\+[^@]+@bounces\\.example\\.org$/\tbouncekeeper\n" in access
    assert "/^app-in@example\\.org$/\tbouncekeeper\n" in access


def test_routed_appends_one_line_to_the_application_listener_and_adds_the_after_queue_services() -> None:
    merged = postfix.merge(current({}, master_cf=SUBMISSION.encode()), ROUTED)
    assert merged.master_cf.startswith(SUBMISSION + "  -o smtpd_milters=$bouncekeeper_milters\n")
    # The listener's own milters first, then ours.
    assert merged.parameters["bouncekeeper_milters"] == f"inet:127.0.0.1:8891, {OURS}"
    assert "\nbouncekeeper unix - - n - 10 smtp\n" in merged.master_cf
    assert "\n127.0.0.1:10027 inet n - n - 10 smtpd\n" in merged.master_cf
    services: tuple[postfix.Service, ...] = (
        *DEBIAN_SERVICES,
        postfix.Service("bouncekeeper", "unix", False, "smtp"),
    )
    services += (postfix.Service("127.0.0.1:10027", "inet", False, "smtpd"),)
    again = postfix.merge(current({}, master_cf=merged.master_cf.encode(), services=services), ROUTED)
    assert again.master_cf == merged.master_cf
    assert again.parameters["bouncekeeper_milters"] == f"inet:127.0.0.1:8891, {OURS}"


def test_routed_refuses_a_filter_it_cannot_listen_on_and_a_missing_policy_socket() -> None:
    with pytest.raises(SetupError, match="policy_filter"):
        postfix.merge(
            current({}, master_cf=SUBMISSION.encode()), replace(ROUTED, policy_filter="smtp:mx.example")
        )
    with pytest.raises(SetupError, match="policy_socket"):
        postfix.merge(current({}, master_cf=SUBMISSION.encode()), replace(ROUTED, policy_socket=""))
    with pytest.raises(SetupError, match="no such service"):
        postfix.merge(current({}), ROUTED)


def test_a_reinjection_listener_with_milters_of_its_own_does_not_count_as_unchrooted() -> None:
    amavis = postfix.Service("127.0.0.1:10025", "inet", False, "smtpd -o smtpd_milters= -o content_filter=")
    merged = postfix.merge(current({}, services=(*DEBIAN_SERVICES, amavis)), WANTED)
    assert merged.parameters["smtpd_milters"] == OURS
    plain = postfix.Service("127.0.0.1:10026", "inet", False, "smtpd -o content_filter=")
    with pytest.raises(SetupError, match="both chrooted and not"):
        postfix.merge(current({}, services=(*DEBIAN_SERVICES, plain)), WANTED)
