"""The VERP keyring and clock, from the settings: what the pure `core.verp` is given by its callers.

The milter, the listener and the CLI build their keyring here, so every adapter reads the same key files
the same way, and today's day number comes from one clock.
"""

from __future__ import annotations

import time

from bouncekeeper import config
from bouncekeeper.core.verp import Keyring

SECONDS_PER_DAY = 86_400


def load_keyring(settings: config.Settings) -> Keyring:
    """The keyring from `[verp] secret_files` (the first signs); a config error when there is none."""
    files = settings.verp.secret_files
    if not files:
        raise config.ConfigError(settings.source, "verp.secret_files", "no key file: VERP needs at least one")
    secrets = [
        config.read_secret(path, f"verp.secret_files[{index}]", settings.source)
        for index, path in enumerate(files)
    ]
    return Keyring.from_secrets(secrets)


def require_bounce_domain(settings: config.Settings) -> str:
    if not settings.verp.bounce_domain:
        raise config.ConfigError(settings.source, "verp.bounce_domain", "empty: VERP is disabled")
    return settings.verp.bounce_domain


def today(now: float | None = None) -> int:
    """Days since the Unix epoch, UTC: Exim's ${eval:$tod_epoch/86400}."""
    return int(time.time() if now is None else now) // SECONDS_PER_DAY
