"""What every MTA's set-up takes from the TOML file: the bounce route and the senders that get VERP.

The values are read once from the validated settings, so an MTA's generated configuration never repeats
by hand what `bouncekeeper.toml` already says (the bounce domain, the listener's address, the senders).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bouncekeeper import config


class SetupError(Exception):
    """Why a set-up cannot be computed or would not pass the MTA's own check; nothing was written."""


@dataclass(frozen=True, slots=True)
class Listener:
    """`[lmtp] listen`: a unix socket path, or a TCP host and port (exactly one of the two)."""

    socket: str = ""
    host: str = ""
    port: int = 0


@dataclass(frozen=True, slots=True)
class BounceRoute:
    source: str  # the TOML file, named in what is generated
    bounce_domain: str
    prefix: str
    key_file: str  # the signing key: the first of [verp] secret_files
    senders: tuple[str, ...]  # shell patterns, lower-cased (as the milter matches them)
    protected: tuple[str, ...]  # exact addresses the loop guard protects
    listener: Listener


# What may appear in a generated MTA configuration without quoting: no spaces, quotes, macros or escapes.
_PLAIN = re.compile(r"[A-Za-z0-9._+=/@*?\[\]-]+")


def from_settings(settings: config.Settings) -> BounceRoute:
    """The route, or a SetupError naming the TOML key that is missing or cannot be written out."""
    v = settings.verp
    if not v.bounce_domain:
        raise SetupError(f"{settings.source}: verp.bounce_domain: required (the domain bounces come back to)")
    if not v.secret_files:
        raise SetupError(f"{settings.source}: verp.secret_files: required (the first file signs)")
    listen = settings.lmtp.listen
    if listen.startswith("unix:"):
        listener = Listener(socket=listen.removeprefix("unix:"))
    else:
        host, _, port = listen.rpartition(":")
        listener = Listener(host=host.strip("[]"), port=int(port))
    values = {
        "verp.bounce_domain": [v.bounce_domain],
        "verp.local_prefix": [v.local_prefix],
        "verp.secret_files[0]": [v.secret_files[0]],
        "verp.senders": list(v.senders),
        "milter.protected_recipients": list(settings.milter.protected_recipients),
        "lmtp.listen": [listener.socket or listener.host],
    }
    for key, items in values.items():
        for item in items:
            if not _PLAIN.fullmatch(item):
                raise SetupError(
                    f"{settings.source}: {key}: {item!r} cannot be written into an MTA's configuration"
                )
    return BounceRoute(
        source=settings.source,
        bounce_domain=v.bounce_domain,
        prefix=v.local_prefix,
        key_file=v.secret_files[0],
        senders=tuple(p.lower() for p in v.senders),
        protected=tuple(a.lower() for a in settings.milter.protected_recipients),
        listener=listener,
    )


def has_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")
