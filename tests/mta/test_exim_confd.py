"""The Debian conf.d snippets in exim/conf.d, assembled with Debian's own update-exim4.conf and conf.d.

The same checks as test_exim_verp.py, on the configuration a Debian site would actually run: Exim's
address test (-bt), its debug routing (errors_to) and simulated SMTP sessions through the ACLs (-bh).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from bouncekeeper import verpkeys
from bouncekeeper.core import verp
from tests.support.exim import EXIM_USER, ROOT, exim_binary, run_exim, scratch_dir

pytestmark = pytest.mark.mta

SECRET = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
BOUNCE_DOMAIN = "bounce.example.net"
APP = "app@example.org"
PROTECTED = "noreply@example.com"


class Assembled:
    def __init__(self, directory: pathlib.Path) -> None:
        self.binary = exim_binary()
        debian = self.binary.parents[2] / "etc" / "exim4"
        etc = directory / "etc"
        shutil.copytree(debian, etc)
        for section in ("main", "router", "transport"):
            for snippet in (ROOT / "exim" / "conf.d" / section).iterdir():
                shutil.copy(snippet, etc / "conf.d" / section / snippet.name)
        shutil.copy(ROOT / "exim" / "bouncekeeper_check_data", etc)
        key = directory / "verp.key"
        key.write_text(SECRET + "\n")
        (etc / "update-exim4.conf.conf").write_text(
            "dc_eximconfig_configtype='smarthost'\ndc_other_hostnames='example.org'\n"
            "dc_local_interfaces='127.0.0.1'\ndc_readhost=''\ndc_relay_domains='bounce.example.net'\n"
            "dc_minimaldns='false'\ndc_relay_nets=''\ndc_smarthost='127.0.0.1::2526'\nCFILEMODE='644'\n"
            "dc_use_split_config='true'\ndc_hide_mailname=''\ndc_mailname_in_oh='true'\n"
            "dc_localdelivery='mail_spool'\n"
        )
        # The site's own macros, as a Debian admin would put them in a conf.d/main file of their own.
        (etc / "conf.d" / "main" / "00_site_test").write_text(
            f"CONFDIR = {etc}\nSPOOLDIR = {directory / 'spool'}\nBK_KEYFILE = {key}\n"
            f"BK_BOUNCE_DOMAIN = {BOUNCE_DOMAIN}\nBK_SENDERS = {APP}\nBK_PROTECTED = {PROTECTED}\n"
            f"BK_LMTP_SOCKET = {directory / 'lmtp.sock'}\n"
        )
        (directory / "spool").mkdir()
        if os.geteuid() == 0:
            shutil.chown(directory / "spool", EXIM_USER)  # -bh writes its spool as the Exim user
        self.config = directory / "exim4.conf"
        update = self.binary.parent / "update-exim4.conf"
        subprocess.run(
            ["bash", str(update), "-d", str(etc), "-o", str(self.config)], check=True, capture_output=True
        )

    def run(self, *args: str, stdin: str = "") -> str:
        result = run_exim(self.binary, self.config, *args, stdin=stdin)
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def exim() -> Iterator[Assembled]:
    directory = scratch_dir("bk-eximd-")
    yield Assembled(directory)
    shutil.rmtree(directory, ignore_errors=True)


def test_debian_config_with_the_snippets_is_valid(exim: Assembled) -> None:
    out = exim.run("-bV")
    assert "Configuration file is" in out
    assert "error" not in out.lower()


def test_verp_addresses_route_to_the_listener_postmaster_to_this_host_and_others_are_refused(
    exim: Assembled,
) -> None:
    ring = verp.Keyring.from_secrets([SECRET.encode()])
    address = verp.encode(
        "alice@example.com", keyring=ring, bounce_domain=BOUNCE_DOMAIN, day=verpkeys.today()
    )
    out = exim.run(
        "-bt", address, f"postmaster@{BOUNCE_DOMAIN}", f"abuse@{BOUNCE_DOMAIN}", f"x@{BOUNCE_DOMAIN}"
    )
    assert "router = bouncekeeper_bounces, transport = bouncekeeper_lmtp" in out
    # Redirected to the same local part at this host, where Debian's own routers (/etc/aliases: this
    # machine's, so not asserted further) take over.
    for name in ("postmaster", "abuse"):
        assert f"R: bouncekeeper_postmaster for {name}@{BOUNCE_DOMAIN}" in out
        assert re.search(rf"^ +<-- {name}@{re.escape(BOUNCE_DOMAIN)}$", out, re.MULTILINE), out
        assert f"{name}@{BOUNCE_DOMAIN} is undeliverable" not in out
    assert f"x@{BOUNCE_DOMAIN} is undeliverable: not a bounce address" in out


def test_outbound_errors_to_is_the_signed_verp_address(exim: Assembled) -> None:
    out = exim.run("-f", APP, "-d+route", "-bt", "Bob@Example.COM")
    match = re.search(r"errors to (\S+)", out)
    assert match, out
    ring = verp.Keyring.from_secrets([SECRET.encode()])
    expected = {
        verp.encode("bob@example.com", keyring=ring, bounce_domain=BOUNCE_DOMAIN, day=day)
        for day in (verpkeys.today(), verpkeys.today() - 1)
    }
    assert match.group(1) in expected
    # Other senders keep their own address: no errors_to.
    assert "errors to" not in exim.run("-f", "someone@example.org", "-d+route", "-bt", "bob@example.com")


def _bh(exim: Assembled, sender: str, rcpt: str, header: str = "") -> str:
    return exim.run(
        "-bh",
        "127.0.0.1",
        stdin=f"EHLO client.example.net\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
        f"From: x@example.net\r\nSubject: hi\r\n{header}\r\nbody\r\n.\r\nQUIT\r\n",
    )


def test_loop_guard_in_debians_data_acl_discards_automatic_mail_to_protected_addresses(
    exim: Assembled,
) -> None:
    assert "DATA ACL discarded recipients" in _bh(exim, "", PROTECTED)
    assert "DATA ACL discarded recipients" in _bh(exim, "x@example.net", PROTECTED, "Precedence: junk\r\n")
    human = _bh(exim, "x@example.net", PROTECTED)
    assert "250 OK id=" in human
    assert "discarded" not in human
