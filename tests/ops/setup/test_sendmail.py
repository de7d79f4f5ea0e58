"""`bouncekeeper setup sendmail`'s merge of a .mc (pure); m4 builds of it where the .cf matters.

The real Sendmail runs the result in tests/mta/test_setup_sendmail.py.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from bouncekeeper import config
from bouncekeeper.ops.setup import sendmail
from bouncekeeper.ops.setup.route import Listener, SetupError
from tests.support.mta_config import SETUP_ROUTE as ROUTE
from tests.support.postfix import ROOT
from tests.support.sendmail import unpacked

TARGET = sendmail.Sendmail(milter_socket="unix:/run/bouncekeeper/milter.sock", route=ROUTE)

SITE = """divert(-1)dnl
divert(0)dnl
OSTYPE(`linux')dnl
define(`confMAX_MESSAGE_SIZE', `20000000')dnl
INPUT_MAIL_FILTER(`opendkim', `S=inet:8891@localhost, F=T')dnl
MAILER_DEFINITIONS
MAILER(`local')dnl
MAILER(`smtp')dnl
"""


def test_the_operators_lines_are_kept_in_order_and_the_block_goes_before_the_mailers() -> None:
    merged = sendmail.merge_mc(SITE, TARGET)
    it = iter(merged.splitlines())
    assert all(line in it for line in SITE.splitlines())
    assert sendmail.unmerge(merged) == SITE
    assert merged.index("INPUT_MAIL_FILTER(`bouncekeeper'") > merged.index("INPUT_MAIL_FILTER(`opendkim'")
    assert merged.index("dnl END bouncekeeper") < merged.index("MAILER(`local')")


def test_the_merge_is_idempotent() -> None:
    once = sendmail.merge_mc(SITE, TARGET)
    assert sendmail.merge_mc(once, TARGET) == once


def test_the_milter_has_no_failure_flag_so_ordinary_mail_passes_when_it_is_down() -> None:
    merged = sendmail.merge_mc(SITE, TARGET)
    (line,) = [x for x in merged.splitlines() if x.startswith("INPUT_MAIL_FILTER(`bouncekeeper'")]
    assert "S=unix:/run/bouncekeeper/milter.sock" in line
    assert "F=" not in line


def test_an_explicit_filter_list_is_extended_and_the_milter_only_declared() -> None:
    site = SITE.replace("MAILER_DEFINITIONS", "define(`confINPUT_MAIL_FILTERS', `opendkim, clamav')dnl")
    merged = sendmail.merge_mc(site, TARGET)
    assert "define(`confINPUT_MAIL_FILTERS', `opendkim, clamav, bouncekeeper')dnl" in merged
    assert "INPUT_MAIL_FILTER(`bouncekeeper'" not in merged
    assert "MAIL_FILTER(`bouncekeeper', `S=unix:/run/bouncekeeper/milter.sock" in merged
    assert sendmail.merge_mc(merged, TARGET) == merged


def test_macro_lists_the_operator_defines_are_extended_others_get_sendmails_own_plus_ours() -> None:
    site = SITE.replace("MAILER_DEFINITIONS", "define(`confMILTER_MACROS_EOM', `{msg_id}, {my_macro}')dnl")
    merged = sendmail.merge_mc(site, TARGET)
    assert "define(`confMILTER_MACROS_EOM', `{msg_id}, {my_macro}, i')dnl" in merged
    assert merged.count("confMILTER_MACROS_EOM") == 1
    assert (
        "define(`confMILTER_MACROS_CONNECT', `j, _, {daemon_name}, {if_name}, {if_addr}, {client_addr}')"
        in merged
    )
    assert "confMILTER_MACROS_ENVFROM" not in merged  # Sendmail's own list has what the milter reads


def test_the_route_and_relay_domain_come_from_the_toml_values() -> None:
    merged = sendmail.merge_mc(SITE, TARGET)
    assert "RELAY_DOMAIN(`bounce.example.net')dnl" in merged
    assert "A=FILE /run/bouncekeeper/lmtp.sock" in merged
    assert "R$* < @ bounce.example.net . > $*\t$#bouncekeeper $@ localhost" in merged
    assert merged.index("Rpostmaster < @ bounce.example.net . >") < merged.index("R$* < @ bounce.example.net")
    tcp = sendmail.Sendmail(
        "inet:8891@127.0.0.1", dataclasses.replace(ROUTE, listener=Listener("", "127.0.0.1", 8024))
    )
    assert "A=TCP 127.0.0.1 8024" in sendmail.merge_mc(SITE, tcp)


def test_the_installers_mailer_and_route_are_the_shipped_ones() -> None:
    # sendmail/bouncekeeper.mc spells out what the installer merges: the same relay domain, mailer line
    # and ruleset 0 rules, in order (postmaster@ the bounce domain before the catch-all route), the
    # domain written through its BOUNCEKEEPER_DOMAIN macro there.
    shipped = (ROOT / "sendmail" / "bouncekeeper.mc").read_text()
    shipped = shipped.replace("BOUNCEKEEPER_DOMAIN", ROUTE.bounce_domain)

    def rules(text: str) -> list[str]:
        return [line for line in text.splitlines() if re.match(r"R[$a-z]|RELAY_DOMAIN|Mbouncekeeper,", line)]

    assert rules(sendmail.merge_mc(SITE, TARGET)) == rules(shipped)
    assert len(rules(shipped)) == 6


def test_a_mc_without_mailer_lines_gets_the_block_at_its_end() -> None:
    merged = sendmail.merge_mc("OSTYPE(`linux')dnl", TARGET)
    assert merged.startswith("OSTYPE(`linux')dnl\ndnl BEGIN bouncekeeper")
    assert merged.endswith("dnl END bouncekeeper\n")


def test_the_milter_socket_is_required_in_libmilters_syntax() -> None:
    base = '[verp]\nbounce_domain = "b.example"\nsecret_files = ["/k"]\n'
    with pytest.raises(SetupError, match=r"milter\.socket: required"):
        sendmail.target_from(config.loads(base, name="bk.toml"))
    postfix_style = config.loads(base + '[milter]\nsocket = "inet:127.0.0.1:8891"\n', name="bk.toml")
    with pytest.raises(SetupError, match="libmilter's"):
        sendmail.target_from(postfix_style)


def test_a_rebuilt_cf_that_differs_only_in_its_build_stamp_is_the_same() -> None:
    a = b"##### built by root@a on Mon\n##### in /etc/mail\nO X=1\n"
    b = b"##### built by root@b on Tue\n##### in /tmp\nO X=1\n"
    assert sendmail.same_cf(a, b)
    assert not sendmail.same_cf(a, b.replace(b"X=1", b"X=2"))


def test_m4_builds_the_merged_mc_with_both_filters_in_order() -> None:
    tree = unpacked()
    if tree is None:
        pytest.skip("needs sendmail-cf (scripts/fetch-sendmail.sh, as root)")
    cf = sendmail.build_cf(sendmail.merge_mc(SITE, TARGET), tree / "usr/share/sendmail/cf").decode()
    assert re.search(r"^O InputMailFilters=opendkim, bouncekeeper$", cf, re.MULTILINE)
    assert "O MaxMessageSize=20000000" in cf
    assert "Xbouncekeeper, S=unix:/run/bouncekeeper/milter.sock, T=C:10s;S:30s;R:30s;E:1m" in cf
    with pytest.raises(SetupError, match="m4 refuses"):
        sendmail.build_cf(SITE + "include(`/nonexistent.m4')\n", tree / "usr/share/sendmail/cf")


def test_text_after_the_block_stays_where_m4_put_it_before_the_merge() -> None:
    # LOCAL_RULE_0 diverts to ruleset 0; without the block's divert back, the operator's next raw line
    # (here a map after the MAILER lines) would become part of ruleset 0.
    tree = unpacked()
    if tree is None:
        pytest.skip("needs sendmail-cf (scripts/fetch-sendmail.sh, as root)")
    site = SITE + "Kmymap hash /etc/mail/mymap\n"

    def before_map(text: str) -> str:
        cf = sendmail.build_cf(text, tree / "usr/share/sendmail/cf").decode()
        return cf[: cf.index("Kmymap")].rsplit("\n", 3)[-3]

    assert before_map(sendmail.merge_mc(site, TARGET)) == before_map(site)
