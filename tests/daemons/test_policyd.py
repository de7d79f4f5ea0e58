"""The Postfix policy service of the routed set-up: its decisions, and the protocol on a real socket."""

from __future__ import annotations

import pathlib
import socket
import time

import pytest

from bouncekeeper import config
from bouncekeeper.core import verp
from bouncekeeper.daemons import milterd, policyd
from tests.support.milter_harness import BOUNCE_DOMAIN, Verp
from tests.support.postfix import free_port

PROTECTED = "app-in@example.org"
FILTER = "bouncekeeper:[127.0.0.1]:10027"


def _settings(
    tmp_path: pathlib.Path, mode: str = "observe", extra: str = f'policy_filter = "{FILTER}"'
) -> config.Settings:
    key = tmp_path / "verp.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    return config.loads(
        f"""state_dir = "{tmp_path}/state"
[verp]
bounce_domain = "{BOUNCE_DOMAIN}"
secret_files = ["{key}"]
[milter]
protected_recipients = ["{PROTECTED}"]
{extra}
[policy]
mode = "{mode}"
"""
    )


def _request(rcpt: str, **extra: str) -> dict[str, str]:
    return {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "sender": "",
        "recipient": rcpt,
        "client_address": "192.0.2.25",
        **extra,
    }


@pytest.mark.parametrize("mode", ["observe", "enforce"])
def test_decisions(tmp_path: pathlib.Path, mode: str) -> None:
    settings = _settings(tmp_path, mode)
    routing = milterd.recipient_routing(settings)
    v = Verp(settings)
    valid = v.address("alice@example.net")
    forged = valid.replace("alice", "alica")
    expired = v.address("alice@example.net", day=int(time.time() // 86400) - 30)
    assert v.check(forged).status == "forged"
    assert v.check(expired).status == "expired"

    def decide(rcpt: str) -> str:
        return policyd.decide(_request(rcpt), routing, v.check)

    assert decide(valid) == f"FILTER {FILTER}"
    assert decide(valid.upper()) == f"FILTER {FILTER}"  # MTAs may change the case of a local part
    refused = "550 5.7.1 Not a valid bounce address"
    assert decide(forged) == (f"{refused} (forged)" if mode == "enforce" else f"FILTER {FILTER}")
    assert decide(expired) == (f"{refused} (expired)" if mode == "enforce" else f"FILTER {FILTER}")
    assert decide(f"<{PROTECTED.upper()}>") == f"FILTER {FILTER}"
    # Not ours: postmaster of the bounce domain, any other address, garbage.
    assert decide(f"postmaster@{BOUNCE_DOMAIN}") == "DUNNO"
    assert decide("someone@example.org") == "DUNNO"
    assert decide("not an address") == "DUNNO"
    assert policyd.decide({"request": "junk", "recipient": valid}, routing, v.check) == "DUNNO"


@pytest.mark.parametrize("family", ["unix", "inet"])
def test_the_protocol_on_a_real_socket(tmp_path: pathlib.Path, family: str) -> None:
    settings = _settings(tmp_path, "enforce")
    v = Verp(settings)
    path = tmp_path / "policy.sock"
    port = free_port()
    spec = f"unix:{path}" if family == "unix" else f"inet:{port}@127.0.0.1"
    server = policyd.PolicyServer(spec, milterd.recipient_routing(settings), mode=0o660)
    if family == "unix":
        assert oct(path.stat().st_mode & 0o777) == "0o660"
    server.start(v.check)
    try:
        with socket.socket(socket.AF_UNIX) if family == "unix" else socket.socket(socket.AF_INET) as s:
            s.connect(str(path) if family == "unix" else ("127.0.0.1", port))
            reader = s.makefile("rb")

            def ask(request: dict[str, str]) -> bytes:
                s.sendall(b"".join(f"{k}={val}\n".encode() for k, val in request.items()) + b"\n")
                return reader.readline() + reader.readline()

            # Postfix keeps one connection per smtpd process for many requests.
            good = v.address("bob@example.net")
            assert ask(_request(good)) == f"action=FILTER {FILTER}\n\n".encode()
            forged = good.replace("bob", "bub")
            assert ask(_request(forged)) == b"action=550 5.7.1 Not a valid bounce address (forged)\n\n"
            assert ask(_request("x@example.org", ccert_subject="a=b=c")) == b"action=DUNNO\n\n"
            # 8-bit junk in a value still gets an answer.
            s.sendall(b"request=smtpd_access_policy\nrecipient=\xff\xfe@example.org\n\n")
            assert reader.readline() + reader.readline() == b"action=DUNNO\n\n"
    finally:
        server.stop()
    assert not path.exists()


def test_an_internal_error_is_a_4xx_never_a_5xx(tmp_path: pathlib.Path) -> None:
    settings = _settings(tmp_path)
    server = policyd.PolicyServer(f"unix:{tmp_path}/p.sock", milterd.recipient_routing(settings))

    def broken(_address: str) -> verp.VerpResult:
        raise RuntimeError("boom")

    server.check_rcpt = broken
    try:
        assert server.answer(_request(f"x@{BOUNCE_DOMAIN}")).startswith("451 4.3.0 ")
        assert server.answer(_request("someone@example.org")) == "DUNNO"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('policy_socket = "/tmp/p.sock"', "milter.policy_socket"),
        ('policy_socket = "inet:127.0.0.1:10040"', "milter.policy_socket"),
        ('policy_filter = "bouncekeeper"', "milter.policy_filter"),
        ('policy_filter = "FILTER bouncekeeper:[127.0.0.1]:10027"', "milter.policy_filter"),
    ],
)
def test_bad_policy_settings_are_fatal_with_the_key_named(
    tmp_path: pathlib.Path, line: str, key: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        _settings(tmp_path, extra=line)
    section, name = key.split(".")
    assert f"{section}: {name}: " in str(err.value)  # the file's section and key, then what is wrong
