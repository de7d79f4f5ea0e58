"""Where a message the milter sees belongs (core/routing.py): pure decisions, no milter needed. The
adapter's tests (tests/daemons/test_milter_adapter.py) drive the same decisions through pymilter."""

from __future__ import annotations

import ipaddress

import pytest

from bouncekeeper.core.routing import MilterRouting, Origin

ROUTING = MilterRouting(
    bounce_domain="bounces.example.org",
    senders=("app@example.org", "*@lists.example.org"),
    originating_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
    originating_daemons=frozenset({"submission"}),
    internal_daemons=frozenset({"postfix-internal"}),
    after_queue_daemons=frozenset({"after-queue"}),
    protected_recipients=frozenset({"app-in@bücher.example"}),
)


@pytest.mark.parametrize(
    ("client", "daemon", "simulated", "origin"),
    [
        ("192.0.2.25", "smtpd", False, Origin(internal=False, after_queue=False, originating=False)),
        ("127.0.0.1", "smtpd", False, Origin(internal=False, after_queue=False, originating=True)),
        ("IPv6:2001:db8::25", "smtpd", False, Origin(internal=False, after_queue=False, originating=True)),
        ("192.0.2.25", "submission", False, Origin(internal=False, after_queue=False, originating=True)),
        ("127.0.0.1", "postfix-internal", False, Origin(internal=True, after_queue=False, originating=True)),
        ("127.0.0.1", "smtpd", True, Origin(internal=True, after_queue=False, originating=True)),
        # Our own Postfix after its queue: from 127.0.0.1, yet inbound and never refused.
        ("127.0.0.1", "after-queue", False, Origin(internal=False, after_queue=True, originating=False)),
        # No client address: nothing refused, and not outbound either.
        (None, "smtpd", False, Origin(internal=True, after_queue=False, originating=False)),
        ("not-an-ip", "smtpd", False, Origin(internal=False, after_queue=False, originating=False)),
    ],
)
def test_the_origin_of_a_connection(client: str | None, daemon: str, simulated: bool, origin: Origin) -> None:
    assert ROUTING.origin(client, daemon, simulated=simulated) == origin


def test_only_watched_domains_concern_an_inbound_recipient_in_either_idn_form() -> None:
    assert ROUTING.concerns("<bounces+x@Bounces.Example.ORG.>")
    assert ROUTING.concerns("<app-in@bücher.example>")
    assert ROUTING.concerns("<app-in@xn--bcher-kva.example>")
    assert not ROUTING.concerns("<someone@example.org>")
    assert not MilterRouting().concerns("<bounces+x@bounces.example.org>")


def test_verp_is_opt_in_by_sender_pattern_and_bounce_addresses_are_of_the_bounce_domain() -> None:
    assert ROUTING.wants_verp("app@example.org")
    assert ROUTING.wants_verp("news@lists.example.org")
    assert not ROUTING.wants_verp("someone@example.org")
    assert not MilterRouting().wants_verp("app@example.org")
    assert ROUTING.is_bounce_address("postmaster@bounces.example.org")
    assert not ROUTING.is_bounce_address("postmaster@example.org")
    assert not MilterRouting().is_bounce_address("x@")
