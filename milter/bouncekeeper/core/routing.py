"""Where a message the milter sees belongs, decided from its connection and the routing settings: pure.

The settings come from `[milter]` and `[verp]` (parsed and checked by daemons/milterd.py at start-up, as
a ConfigError naming file and key); the decisions are the milter's own, made once per connection or
recipient:

- **origin**: whether the connection is Postfix's non-SMTP path (`internal_daemons`, or the client it
  simulates), its after-queue listener of the routed set-up (`after_queue_daemons`), and whether its mail
  is outbound (`originating_networks`, `originating_daemons`; SASL is added per message by the adapter);
- **concerns**: whether an inbound recipient may be a bounce or a protected address (its domain is
  watched: anything else is passed without parsing it);
- **wants_verp**: whether an outbound sender asked for VERP (`[verp] senders`, an opt-in list of patterns).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from bouncekeeper.core import addresses

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one connection's mail comes from."""

    # Postfix's non-SMTP path, or a client the milter cannot see: nothing is refused, nothing rewritten.
    internal: bool
    # The after-queue listener of the routed set-up (postfix/routed/): mail this host already accepted.
    after_queue: bool
    # Mail from this connection is outbound (before SASL, which the adapter adds per message).
    originating: bool


@dataclass(frozen=True)
class MilterRouting:
    """The milter's routing settings: which mail is outbound, which recipients it watches, what it does."""

    bounce_domain: str = ""
    local_prefix: str = "bounces"
    senders: tuple[str, ...] = ()
    multi_recipient: Literal["token", "split"] = "token"
    context_header: str = ""
    originating_networks: tuple[Network, ...] = ()
    originating_daemons: frozenset[str] = frozenset()
    internal_daemons: frozenset[str] = frozenset()
    after_queue_daemons: frozenset[str] = frozenset()
    protected_recipients: frozenset[str] = frozenset()
    loop_action: Literal["discard", "reject", "tag"] = "discard"
    suppression: Literal["off", "observe", "enforce"] = "off"
    bounce_action: Literal["discard", "accept"] = "discard"
    accept_early: bool = True
    enforce: bool = False
    # Domains whose recipients concern an inbound message (bounce domain, protected addresses' domains,
    # in Unicode and A-label form): any other inbound recipient is passed without parsing it. Derived
    # from the two, never given: it cannot disagree with them.
    watched_domains: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "watched_domains", _watched_domains(self.bounce_domain, self.protected_recipients)
        )

    def origin(self, client_addr: str | None, daemon_name: str | None, *, simulated: bool) -> Origin:
        """`simulated`: the client is the one Postfix's cleanup makes up for non-SMTP mail."""
        # The daemon name set on the cleanup service (postfix/master.cf.snippet) is the explicit mark of
        # Postfix's non-SMTP path; the simulated client is the safety net when that snippet is missing.
        marked_internal = daemon_name in self.internal_daemons or simulated
        # The after-queue listener's client is our own Postfix (127.0.0.1, in originating_networks by
        # default): its daemon name says the mail came from outside.
        after_queue = daemon_name in self.after_queue_daemons
        return Origin(
            # Without a client address the milter cannot tell where the mail comes from: it refuses
            # nothing (the non-SMTP rules), but it does not treat the mail as outbound either: rewriting
            # the sender of inbound mail would be worse than missing a VERP.
            internal=marked_internal or not client_addr,
            after_queue=after_queue,
            originating=not after_queue
            and (
                marked_internal or self.is_originating(client_addr) or daemon_name in self.originating_daemons
            ),
        )

    def is_originating(self, client_addr: str | None) -> bool:
        if not client_addr:
            return False
        return _in_networks(client_addr, self.originating_networks)

    def concerns(self, rcpt: str) -> bool:
        """Whether an inbound RCPT may be a bounce or a protected address (cheap: no parsing)."""
        return addresses.rcpt_domain(rcpt) in self.watched_domains

    def is_bounce_address(self, address: str) -> bool:
        """Whether a normalised address is of the bounce domain (VERP or not)."""
        return bool(self.bounce_domain) and addresses.domain_of(address) == self.bounce_domain

    def wants_verp(self, sender: str) -> bool:
        # Opt in: no listed sender, no rewriting. On a shared host "originating" includes every local
        # user, cron and webmail; their mail must keep its sender unless the operator names it.
        return any(fnmatch.fnmatchcase(sender, pattern) for pattern in self.senders)


def _watched_domains(bounce_domain: str, protected: Iterable[str]) -> frozenset[str]:
    """The bounce domain and the protected addresses' domains, each also in A-label form."""
    watched = {bounce_domain} if bounce_domain else set()
    for address in protected:
        domain = addresses.domain_of(address)
        watched.add(domain)
        with contextlib.suppress(UnicodeError):
            watched.add(domain.encode("idna").decode("ascii"))
    return frozenset(watched)


@functools.lru_cache(maxsize=4096)
def _in_networks(client_addr: str, networks: tuple[Network, ...]) -> bool:
    """Cached: parsing an address costs more than the rest of an ordinary message's work here."""
    try:
        ip = ipaddress.ip_address(client_addr.removeprefix("IPv6:"))
    except ValueError:
        return False
    return any(ip in net for net in networks)
