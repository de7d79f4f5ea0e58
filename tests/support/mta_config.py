"""The bouncekeeper settings every real-MTA test stack starts from, written once.

Each stack adds its own sections ([milter], [lmtp], [notify] ...) after `settings_head`; the head holds
what they share: Redis, an enforcing policy, and VERP for the one application sender, so that a person's
mail on the same host keeps its sender.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from bouncekeeper.ops.setup.route import BounceRoute, Listener

BOUNCE_DOMAIN = "bounces.example.org"
APP = "app@example.org"
# A store that answers "unavailable" within a second, for tests that stop Redis on purpose.
FAST_FAILING = "socket_timeout = 0.5\nconnect_timeout = 0.5\nretries = 0\n"
# The route `bouncekeeper setup` computes from a TOML file (route.from_settings), for the merge tests over
# configuration texts (tests/ops/setup/); each varies it with dataclasses.replace.
SETUP_ROUTE = BounceRoute(
    source="/etc/bouncekeeper/bouncekeeper.toml",
    bounce_domain="bounce.example.net",
    prefix="bounces",
    key_file="/etc/bouncekeeper/verp.key",
    senders=("app@example.org",),
    protected=("app@example.org",),
    listener=Listener(socket="/run/bouncekeeper/lmtp.sock"),
)


def settings_head(
    redis_url: str,
    keys: Sequence[pathlib.Path],
    *,
    mode: str = "enforce",
    level: str = "DEBUG",
    redis_extra: str = "",
    policy_extra: str = "",
) -> str:
    """[log], [redis], [policy] and [verp]; `*_extra` are more lines of that section."""
    files = ", ".join(f'"{key}"' for key in keys)
    return (
        f'[log]\nlevel = "{level}"\n'
        f'[redis]\nurl = "{redis_url}"\n{redis_extra}'
        f'[policy]\nmode = "{mode}"\n{policy_extra}'
        f'[verp]\nbounce_domain = "{BOUNCE_DOMAIN}"\nsecret_files = [{files}]\nsenders = ["{APP}"]\n'
    )
