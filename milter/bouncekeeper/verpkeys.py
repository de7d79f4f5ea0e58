"""The VERP keyring and clock, from the settings: what the pure `core.verp` is given by its callers.

The milter, the listener and the CLI build their keyring here, so every adapter reads the same key files
the same way, and today's day number comes from one clock.

`Signer` is also the Python API for applications that sign their own envelope senders (docs/verp-spec.md,
"Python"): its constructors and `address_for` are kept stable. It imports neither the milter nor Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bouncekeeper import config
from bouncekeeper.core.verp import Keyring, VerpResult, decode, encode, encode_token

SECONDS_PER_DAY = 86_400


def load_keyring(settings: config.Settings) -> Keyring:
    """The keyring from `[verp] secret_files` (the first signs); a config error when there is none."""
    files = settings.verp.secret_files
    if not files:
        raise config.ConfigError(settings.source, "verp.secret_files", "no key file: VERP needs at least one")
    return _read_keyring(files, "verp.secret_files", settings.source)


def _read_keyring(files: Sequence[str], setting: str, source: str) -> Keyring:
    """The keyring of these key files, each read by `config.read_secret` (the first signs)."""
    return Keyring.from_secrets(
        [config.read_secret(path, f"{setting}[{i}]", source) for i, path in enumerate(files)]
    )


def require_bounce_domain(settings: config.Settings) -> str:
    if not settings.verp.bounce_domain:
        raise config.ConfigError(settings.source, "verp.bounce_domain", "empty: VERP is disabled")
    return settings.verp.bounce_domain


def decode_with(address: str, keyring: Keyring, settings: config.Settings, *, day: int) -> VerpResult:
    """`core.verp.decode` with the settings' domain, validity and prefix: every caller decodes the same
    way (the daemons' RCPT check, `verp decode`, `classify --rcpt`)."""
    v = settings.verp
    return decode(
        address,
        keyring=keyring,
        bounce_domain=v.bounce_domain,
        today=day,
        max_age_days=v.max_age_days,
        prefix=v.local_prefix,
    )


def today(now: float | None = None) -> int:
    """Days since the Unix epoch, UTC: Exim's ${eval:$tod_epoch/86400}."""
    return int(time.time() if now is None else now) // SECONDS_PER_DAY


@dataclass(frozen=True)
class Signer:
    """Signs VERP addresses with today's date (the clock lives here, not in the core)."""

    keyring: Keyring
    bounce_domain: str
    prefix: str = "bounces"
    clock: Callable[[], float] = time.time

    @classmethod
    def from_settings(cls, settings: config.Settings) -> Signer:
        """The signer of a bouncekeeper configuration: its key files, bounce domain and prefix."""
        domain = require_bounce_domain(settings)
        return cls(load_keyring(settings), domain, settings.verp.local_prefix)

    @classmethod
    def from_key_files(cls, key_files: Sequence[str], bounce_domain: str, prefix: str = "bounces") -> Signer:
        """A signer from key files read as bouncekeeper reads them (the first signs); ConfigError when one
        is unreadable or shorter than 16 bytes."""
        # The domain as given: core.verp lower-cases it and drops a final dot, as for the settings'.
        return cls(_read_keyring(key_files, "key_files", "Signer.from_key_files"), bounce_domain, prefix)

    def today(self) -> int:
        return today(self.clock())

    def address_for(self, recipient: str, context: str = "") -> str:
        """The signed VERP address of `recipient` today; VerpUnencodable (VerpTooLong) when it has none."""
        return encode(
            recipient,
            keyring=self.keyring,
            bounce_domain=self.bounce_domain,
            day=self.today(),
            context=context,
            prefix=self.prefix,
        )

    def address_for_token(self, token: str) -> str:
        return encode_token(
            token,
            keyring=self.keyring,
            bounce_domain=self.bounce_domain,
            day=self.today(),
            prefix=self.prefix,
        )


def load_signer(settings: config.Settings) -> Signer | None:
    """The signer of a configuration, or None when VERP is off (`[verp] bounce_domain` is empty)."""
    if not settings.verp.bounce_domain:
        return None
    return Signer.from_settings(settings)
