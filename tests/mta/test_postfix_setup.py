"""The deployment rehearsal: bouncekeeper installed on a Postfix that already works, by the
commands docs/postfix.md shows (read from that file), then undone by its undo commands.

The operator's Postfix (tests/support/postfix_setup.py) has another milter that adds a header (standing
for OpenDKIM), a `submission` service with its own `-o` options, recipient restrictions, a transport
table and a person's mailbox. After the install: that milter still sees every message, the options and
restrictions are intact, the person's mail keeps its sender, the application's gets a VERP sender, a
bounce to it is recorded, the bounce domain takes `postmaster@` and refuses other local parts. After the
undo: main.cf and master.cf byte for byte as before, the generated tables gone, mail as before.
"""

from __future__ import annotations

import pathlib
import smtplib
import tempfile
from dataclasses import dataclass

import pytest

from tests.support.dsn import postfix_dsn
from tests.support.mta_config import APP, BOUNCE_DOMAIN
from tests.support.postfix import have_postfix, wait_port
from tests.support.postfix_mta import message
from tests.support.postfix_setup import (
    OTHER_HEADER,
    PERSON,
    RESTRICTIONS,
    SUBMISSION,
    Deployment,
    operators_host,
)

pytestmark = [
    pytest.mark.mta,
    pytest.mark.slow,
    pytest.mark.skipif(not have_postfix(), reason="needs root and Postfix (scripts/sysdeps.sh)"),
]


@dataclass(frozen=True)
class Snapshot:
    files: dict[str, bytes]  # every file of the configuration directory
    parameters: dict[str, str]  # postconf -n
    services: set[str]  # postconf -M
    overrides: set[str]  # postconf -P: every service's -o options


def _snapshot(host: Deployment) -> Snapshot:
    parameters = {}
    for line in host.postfix.postconf("-n").splitlines():
        name, _, value = line.partition("=")
        parameters[name.strip()] = value.strip()
    return Snapshot(
        {p.name: p.read_bytes() for p in host.etc.iterdir() if p.is_file()},
        parameters,
        set(host.postfix.postconf("-M").splitlines()),
        set(host.postfix.postconf("-P").splitlines()),
    )


def _outbound_and_inbound(host: Deployment, tag: str) -> None:
    """The mail that must flow the same before and after: a person's, inbound to the person."""
    host.send("submission", PERSON, ["friend@example.net"], message(f"{tag}-person", sender=PERSON))
    msg = host.sink.wait_for(lambda m: f"Subject: {tag}-person" in m.text)
    assert msg.sender == PERSON
    assert msg.header(OTHER_HEADER) == ["seen"]
    host.send("smtp", "friend@example.net", [PERSON], message(f"{tag}-in", sender="friend@example.net"))
    host.wait_queue_empty()
    delivered = [m for m in host.mailbox("alice") if f"Subject: {tag}-in" in m]
    assert len(delivered) == 1
    assert f"{OTHER_HEADER}: seen" in delivered[0]
    assert "Return-Path: <friend@example.net>" in delivered[0]


def test_the_documented_install_merges_into_a_working_postfix_and_the_undo_restores_it() -> None:
    with tempfile.TemporaryDirectory(prefix="bk-pfsetup-") as tmp, operators_host(pathlib.Path(tmp)) as host:
        _outbound_and_inbound(host, "before")
        before = _snapshot(host)

        shown, applied, _reloaded = host.run_documented("Install")
        assert "nothing written" in shown.stdout
        assert "+smtpd_milters = unix:" in shown.stdout
        assert "MX record" in shown.stdout  # the steps by hand, before anything is written
        assert "not reloaded" in applied.stdout
        assert "MX" in applied.stdout
        after = _snapshot(host)

        # The operator's services and their -o options, byte for byte; one service added (lmtp).
        assert after.overrides == before.overrides
        assert any(SUBMISSION["smtpd_client_restrictions"] in line for line in after.overrides)
        assert before.services <= after.services
        assert [line.split()[:2] for line in after.services - before.services] == [["lmtp", "unix"]]
        # The operator's parameters: unchanged, or extended with their old value kept whole.
        params = after.parameters
        for name, value in before.parameters.items():
            assert value in params[name], (name, value, params[name])
        assert params["smtpd_milters"].startswith(f"unix:{host.other.path}, {{ unix:")
        assert params["non_smtpd_milters"] == "$smtpd_milters"
        assert params["smtpd_recipient_restrictions"].endswith(f", {RESTRICTIONS}")
        assert not any(name.startswith("milter_") for name in params)

        # A second --apply has nothing to do.
        again = host.run_documented("Install")[1]
        assert "nothing to change" in again.stdout

        _outbound_and_inbound(host, "after")
        assert _milter_sessions(host, "mta.example.test") > 0  # inline: the MX's sessions meet the milter
        host.send("submission", APP, ["someone@example.net"], message("app-mail"))
        msg = host.sink.wait_for(lambda m: "Subject: app-mail" in m.text)
        assert msg.sender == host.signer.address_for("someone@example.net", "")
        assert msg.header(OTHER_HEADER) == ["seen"]

        # sendmail(1): non_smtpd_milters = $smtpd_milters brings both milters to it, once each.
        host.submit_local(APP, "local@example.net", message("app-local"))
        local = host.sink.wait_for(lambda m: "Subject: app-local" in m.text)
        assert local.sender == host.signer.address_for("local@example.net", "")
        assert local.header(OTHER_HEADER) == ["seen"]

        host.send("smtp", "", [msg.sender], postfix_dsn("someone@example.net", to=msg.sender))
        events = host.wait_events("someone@example.net", lambda e: bool(e))
        assert [e["kind"] for e in events] == ["permanent"]

        # The bounce domain: postmaster@ reaches the operator's postmaster, other local parts are refused.
        host.send("smtp", "friend@example.net", [f"postmaster@{BOUNCE_DOMAIN}"], message("to-postmaster"))
        note = host.sink.wait_for(lambda m: "Subject: to-postmaster" in m.text)
        assert note.recipients == ["postmaster@mta.example.test"]
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            host.send("smtp", "friend@example.net", [f"nobody@{BOUNCE_DOMAIN}"], message("to-nobody"))
        assert next(iter(refused.value.recipients.values()))[0] == 550

        undone = host.run_documented("Undo")[0]
        assert f"removed {host.etc}/bouncekeeper_transport" in undone.stdout
        assert _snapshot(host) == before
        _outbound_and_inbound(host, "undone")
        host.send("submission", APP, ["someone@example.net"], message("app-undone"))
        assert host.sink.wait_for(lambda m: "Subject: app-undone" in m.text).sender == APP


def _milter_sessions(host: Deployment, daemon: str) -> int:
    """Milter sessions from one Postfix listener, by its {daemon_name} (the MX's is $myhostname)."""
    return host.milter.log().count(f"connect client=127.0.0.1 daemon={daemon} ")


def test_the_documented_routed_install_keeps_the_milter_off_the_mx_and_undoes() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bk-pfrouted-") as tmp,
        operators_host(pathlib.Path(tmp), routed=True) as host,
    ):
        before = _snapshot(host)
        submission = f"127.0.0.1:{host.postfix.ports['submission']}/inet"
        host.run_documented("Install (routed)", {"submission/inet": submission})
        after = _snapshot(host)
        assert "smtpd_milters" not in {
            n for n, v in after.parameters.items() if before.parameters.get(n) != v
        }
        # The operator's services: one option added to the application's listener, nothing else changed.
        existing = {line.split()[0] for line in before.services}
        theirs = {o for o in after.overrides if o.split("/", 1)[0] in existing}
        assert theirs - before.overrides == {f"{submission}/smtpd_milters = $bouncekeeper_milters"}
        assert before.overrides <= theirs
        listener = host.settings.milter.policy_filter.rpartition("[127.0.0.1]:")[2]
        wait_port(int(listener))

        # Ordinary inbound mail: delivered, and the milter never saw a session from the MX.
        _outbound_and_inbound(host, "routed")
        assert _milter_sessions(host, "ORIGINATING") == 1  # the person's mail, on the application's listener
        assert _milter_sessions(host, "mta.example.test") == 0

        host.send("submission", APP, ["someone@example.net"], message("routed-app"))
        msg = host.sink.wait_for(lambda m: "Subject: routed-app" in m.text)
        assert msg.sender == host.signer.address_for("someone@example.net", "")
        assert msg.header(OTHER_HEADER) == ["seen"]

        # A bounce: the policy service FILTERs it to the after-queue listener, whose milter records it.
        host.send("smtp", "", [msg.sender], postfix_dsn("someone@example.net", to=msg.sender))
        events = host.wait_events("someone@example.net", lambda e: bool(e))
        assert [e["kind"] for e in events] == ["permanent"]
        forged = msg.sender.replace("+", "+0", 1)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            host.send("smtp", "", [forged], postfix_dsn("else@example.net", to=forged))
        assert next(iter(refused.value.recipients.values()))[0] == 550

        assert _milter_sessions(host, "mta.example.test") == 0
        again = host.run_documented("Install (routed)", {"submission/inet": submission})[1]
        assert "nothing to change" in again.stdout
        host.run_documented("Undo")
        assert _snapshot(host) == before
