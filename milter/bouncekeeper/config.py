"""TOML configuration -> validated, frozen settings.

Every section is a frozen dataclass whose fields are the allowed keys, with their defaults. The loader
(tomlschema.py) walks the dataclasses, so adding a key is adding a field. An unknown key, a value of the
wrong type or an invalid value stops start-up with a `ConfigError` naming the file and the key: a typo in
a mail server's config must never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import pathlib
import tomllib
from dataclasses import dataclass, field
from typing import Literal

from bouncekeeper import tomlschema
from bouncekeeper.core import throttle
from bouncekeeper.core.model import Reason
from bouncekeeper.core.scoring import DEFAULT_NON_SCORING
from bouncekeeper.tomlschema import FileMode

ENV_VAR = "BOUNCEKEEPER_CONFIG"
# Where the daemons' units and an operator's commands find the settings when no --config is given.
DEFAULT_PATH = "/etc/bouncekeeper/bouncekeeper.toml"


# The default of both socket_mode keys (a module constant: an immutable value, shared safely).
SOCKET_MODE = FileMode(0o660)


class ConfigError(Exception):
    """A configuration problem, with the file and the dotted key it concerns."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


@dataclass(frozen=True)
class LogSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "stderr" or "syslog" (to /dev/log, with the facility below).
    target: Literal["stderr", "syslog"] = "stderr"
    facility: str = "mail"
    # Lines about cuts a client can cause at will (docs/hostile.md): this many of a kind per interval
    # (seconds), then one line with how many were held back; the metrics count every cut.
    limited_burst: int = throttle.LINE_BURST
    limited_interval: float = throttle.LINE_INTERVAL

    def __post_init__(self) -> None:
        _check_positive(self, "limited_burst", "limited_interval")


@dataclass(frozen=True)
class VerpSettings:
    # The domain that receives bounces. Empty disables VERP (and bounce capture) entirely.
    bounce_domain: str = ""
    # Files holding the HMAC keys, one key per file. The first signs; all verify (key rotation).
    secret_files: tuple[str, ...] = ()
    # How long a VERP address stays valid: bounces can come back days after the send.
    max_age_days: int = 14
    # Local-part prefix of VERP addresses: bounces+alice=example.org+TAG@bounce_domain.
    local_prefix: str = "bounces"
    # Envelope senders whose outbound mail gets a VERP sender: shell patterns matched against the
    # normalised address ("app@example.org", "*@news.example.org"). Empty: no sender is rewritten (opt in:
    # on a shared host every local user's mail is "originating").
    senders: tuple[str, ...] = ()
    # Several recipients in one transaction (chgfrom changes the sender of all of them):
    # "token" = one per-message token in the VERP address, recipients kept in Redis for the validity
    # window; "split" = answer 452 4.5.3 to the 2nd and later RCPT so the client sends one per transaction.
    multi_recipient: Literal["token", "split"] = "token"
    # Header the application sets to tag a message (newsletter id ...); carried in the VERP address and
    # removed before the mail leaves. Empty: no context tag.
    context_header: str = "X-Bouncekeeper-Context"

    def __post_init__(self) -> None:
        # Canonical here, once: every reader compares it with an address's lower-cased domain.
        object.__setattr__(self, "bounce_domain", self.bounce_domain.strip().lower().rstrip("."))


@dataclass(frozen=True)
class RedisSettings:
    # Empty: bouncekeeper starts and supervises its own redis-server under state_dir. Otherwise
    # redis://, rediss:// (TLS), unix:///path?db=N, redis+cluster://host:port for a Redis Cluster
    # (any one node; the others are discovered), or redis+sentinel://host:port,host:port/service?db=N
    # for a master watched by Redis Sentinel (the sentinels' addresses and the master's name).
    url: str = ""
    # Prepended to every key; must not contain braces (they are Redis Cluster hash tags).
    prefix: str = "bk:"
    # Per-command bounds. (connect_timeout + socket_timeout) * (retries + 1) must stay well under
    # Postfix's milter_command_timeout (30 s): the defaults give at most 9 s.
    socket_timeout: float = 2.0
    connect_timeout: float = 1.0
    retries: int = 2
    # Events kept per address (a capped list; 0 keeps none, the global stream only), and for how long
    # after the address's last event.
    history_size: int = 20
    history_days: int = 90
    # Entries kept in the global event stream (approximate cap, XADD MAXLEN ~).
    stream_size: int = 100_000
    # How long a delivered bounce is remembered so that a retry of the same bounce counts once:
    # Postfix's maximal_queue_lifetime default (5 days), the longest an MTA usually retries.
    dedup_hours: int = 120
    # Keep the raw bounce (capped at raw_max_bytes) for this many days; 0 keeps none (the default).
    raw_days: int = 0
    raw_max_bytes: int = 65_536
    # The embedded server's appendfsync: "everysec" (a machine crash loses at most the last second of
    # updates) or "always" (fsync before each reply: nothing lost, far fewer writes per second).
    embedded_fsync: Literal["everysec", "always"] = "everysec"
    # Let a process running as root start the embedded redis-server. Off: root would create a server and
    # files in state_dir that the daemons' own user cannot use. For a development checkout (contrib/dev.toml).
    embedded_as_root: bool = False
    # TLS for rediss:// and rediss+cluster:// URLs: the CA file that signed the server's certificate
    # (empty: the system's CAs), and a client certificate and key for servers that require one
    # (tls-auth-clients yes). The server's certificate must name the URL's host (DNS or IP SAN).
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # An ACL user, and a file holding the password (its line ends dropped), so that the secret need not
    # sit in the config file. Also for Sentinel's master and replicas. A password inside the URL still
    # works; both at once is refused.
    username: str = ""
    password_file: str = ""
    # The same for the sentinels themselves (requirepass / ACL users on the sentinels), when they ask.
    sentinel_username: str = ""
    sentinel_password_file: str = ""
    # WAIT: a bounce is acknowledged (250, or the milter's accept) only once this many replicas hold it,
    # within wait_timeout seconds; fewer is a tempfail (the MTA retries, the store counts the retry once).
    # 0: the master's own acknowledgement is enough (a master that dies before replicating loses it).
    wait_replicas: int = 0
    wait_timeout: float = 1.0

    def __post_init__(self) -> None:
        self._check_url()
        self._check_credentials()
        if self.wait_replicas and self.wait_timeout >= self.socket_timeout:
            raise ValueError("wait_timeout: must be shorter than socket_timeout (WAIT blocks the command)")
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("prefix: must not contain { or } (Redis Cluster hash tags)")
        if self.stream_size < 1:
            raise ValueError("stream_size: must be at least 1")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file: set both (a client certificate) or neither")

    def _check_url(self) -> None:
        schemes = (
            "redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://", "redis+sentinel://"
        )  # fmt: skip
        if self.url and not self.url.startswith(schemes):
            raise ValueError(
                f"url: use one of {', '.join(schemes)} (or leave it empty for the embedded server)"
            )
        if self.url.startswith("redis+sentinel://"):
            parse_sentinel_url(self.url)
        elif self.sentinel_username or self.sentinel_password_file:
            raise ValueError("sentinel_username, sentinel_password_file: only with a redis+sentinel:// url")

    def _check_credentials(self) -> None:
        if not self.url and (self.username or self.password_file):
            raise ValueError("username, password_file: only with a url (the embedded server has no users)")
        if self.password_file and _url_password(self.url):
            raise ValueError("password_file: the url has a password too; keep one of them")
        for key in ("password_file", "sentinel_password_file"):
            path = getattr(self, key)
            if path and not os.access(path, os.R_OK):
                raise ValueError(f"{key}: cannot read {path}")


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int


def parse_sentinel_url(url: str) -> SentinelUrl:
    """redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[?db=N]. Credentials are never in this URL:
    username/password_file (the master) and sentinel_username/sentinel_password_file (the sentinels)."""
    rest = url.removeprefix("redis+sentinel://")
    hosts, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "@" in hosts:
        raise ValueError("url: no credentials in a redis+sentinel:// url; use username and password_file")
    sentinels = []
    for part in hosts.split(","):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"url: {part!r} is not HOST:PORT (redis+sentinel://HOST:PORT,HOST:PORT/SERVICE)")
        sentinels.append((host.strip("[]"), int(port)))
    if not path or "/" in path:
        raise ValueError("url: name the master after the sentinels: redis+sentinel://HOST:PORT/SERVICE")
    db = 0
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        if name != "db" or not value.isdigit():
            raise ValueError(f"url: unknown or invalid parameter {pair!r} (only db=N)")
        db = int(value)
    return SentinelUrl(tuple(sentinels), path, db)


def _url_password(url: str) -> bool:
    authority = url.partition("://")[2].partition("/")[0]
    return "@" in authority and ":" in authority.rpartition("@")[0]


@dataclass(frozen=True)
class ScoringSettings:
    """The scoring's thresholds and windows (core/scoring.py). Its TOML section keeps the name `[policy]`
    (Settings.policy): operators' files written before the rename must keep loading."""

    # observe: count and report, never disable; enforce: disable at the threshold.
    mode: Literal["observe", "enforce"] = "observe"
    soft_threshold: int = 5
    soft_window_days: int = 7
    # daily: the hard score rises once per UTC day with a hard bounce and disables at hard_threshold;
    # it resets when it has not risen for quiet_days. count: disabled after count_threshold hard
    # bounces within count_window_days (MediaWiki's "3 in a week").
    rule: Literal["daily", "count"] = "daily"
    hard_threshold: int = 5
    quiet_days: int = 7
    count_threshold: int = 3
    count_window_days: int = 7
    # Reasons recorded but never scored (core/model.py Reason values); core/scoring.py explains the list.
    non_scoring_reasons: tuple[str, ...] = tuple(sorted(r.value for r in DEFAULT_NON_SCORING))
    # Per-domain circuit breaker: when breaker_addresses distinct addresses of one domain get a scored
    # failure within breaker_window_minutes, scoring stops for that domain for breaker_freeze_hours and
    # an alert is recorded. 0 addresses turns the breaker off.
    breaker_addresses: int = 100
    breaker_window_minutes: int = 10
    breaker_freeze_hours: int = 24
    # Score only bounces that arrive at an authentic VERP address naming the failed recipient; the
    # others (no envelope recipient, a plain address) are recorded in the stream only, never scored:
    # anyone can write a bounce naming anyone (docs/security.md). false opts in to scoring them.
    require_verp: bool = True

    def __post_init__(self) -> None:
        for name in self.non_scoring_reasons:
            if name not in Reason.__members__.values():
                raise ValueError(f"non_scoring_reasons: unknown reason {name!r}")
        counts = ("soft_threshold", "hard_threshold", "count_threshold")
        windows = ("soft_window_days", "quiet_days", "count_window_days")
        for key in (*counts, *windows):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1")


@dataclass(frozen=True)
class MilterSettings:
    # libmilter syntax: unix:/path (recommended) or inet:PORT@HOST (Postfix writes inet:HOST:PORT).
    # Empty: unix:{state_dir}/milter.sock.
    socket: str = ""
    # Permissions of a unix socket ("0660" or 0o660). The MTA's user must be able to write it: 0660 with
    # the MTA in the group of `user`, or 0666 in a folder only the MTA can traverse.
    socket_mode: FileMode = SOCKET_MODE
    # Drop privileges to this user (and its primary group) after opening the socket; empty: stay.
    user: str = ""
    # Pid file; empty: {state_dir}/milter.pid.
    pid_file: str = ""
    # SMTP clients whose mail is outbound (the application, local relays): CIDR networks.
    originating_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Postfix {daemon_name} values (milter_macro_daemon_name) that mark outbound mail, e.g. the
    # submission service's `-o milter_macro_daemon_name=ORIGINATING`.
    originating_daemons: tuple[str, ...] = ("ORIGINATING",)
    # {daemon_name} values that mark Postfix's non-SMTP path (non_smtpd_milters: sendmail(1) and
    # Postfix's own bounces). There the milter never rejects nor tempfails (MILTER_README).
    internal_daemons: tuple[str, ...] = ("postfix-internal",)
    # {daemon_name} values of the after-queue listener of the routed Postfix set-up (postfix/routed/):
    # mail there was already accepted by this host, so it is inbound, and the milter never rejects it
    # (a refusal would become a bounce from our own queue); it may still tempfail (the mail waits in the
    # queue and is retried).
    after_queue_daemons: tuple[str, ...] = ("bouncekeeper-after-queue",)
    # Postfix policy service (check_policy_service) for the routed set-up, in the milter's socket syntax
    # (unix:/path or inet:PORT@HOST); "": off. It checks VERP signatures at RCPT on the MX without a milter
    # there, and sends bounces and protected recipients' mail through `policy_filter`.
    policy_socket: str = ""
    # The FILTER action's transport:destination that leads to the after-queue listener (master.cf).
    policy_filter: str = "bouncekeeper:[127.0.0.1]:10027"
    # The application's own inbound addresses, guarded against bounce loops.
    protected_recipients: tuple[str, ...] = ()
    # What happens to a loop message to a protected address: dropped (discard), refused (reject, 550
    # 5.7.1) or delivered with an X-Bouncekeeper-Loop header (tag).
    loop_action: Literal["discard", "reject", "tag"] = "discard"
    # Suppression of disabled recipients at RCPT for outbound mail.
    suppression: Literal["off", "observe", "enforce"] = "off"
    # After a bounce is recorded: drop it (discard) or let it go on to delivery (accept, e.g. an archive).
    bounce_action: Literal["discard", "accept"] = "discard"
    # Accept ordinary inbound mail at its first recipient when that recipient's domain is neither the
    # bounce domain nor a protected address's domain (true), instead of at DATA once all recipients
    # are known (false). Postfix then hands no milter to cleanup and waits for no DATA reply: about half
    # the milter's cost on an MX. The price: a later recipient of the same transaction in a watched
    # domain goes unseen (a DSN or an auto-reply answers one envelope, so never a bounce of ours).
    accept_early: bool = True
    # Prometheus `GET /metrics` at "HOST:PORT" (no authentication: loopback); "": off.
    metrics_listen: str = ""
    # The policy service's bounds (one connection per smtpd process, kept by Postfix for up to
    # smtpd_policy_service_max_idle = 300 s idle and max_ttl = 1000 s): an idle connection is closed after
    # policy_timeout, any connection after policy_session_timeout; beyond policy_max_connections a new
    # connection is closed at once (Postfix retries, then applies its default action, a 4xx).
    policy_timeout: float = 330.0
    policy_session_timeout: float = 1200.0
    policy_max_connections: int = 500

    def __post_init__(self) -> None:
        _check_metrics_listen(self.metrics_listen)
        _check_positive(self, "policy_timeout", "policy_session_timeout", "policy_max_connections")
        port, at, _host = self.policy_socket.removeprefix("inet:").partition("@")
        inet_ok = self.policy_socket.startswith("inet:") and at and port.isdigit() and int(port) <= 65535
        unix_ok = self.policy_socket.startswith("unix:/")
        if self.policy_socket and not (inet_ok or unix_ok):
            raise ValueError(
                f'policy_socket: use "unix:/path" or "inet:PORT@HOST", not {self.policy_socket!r}'
            )
        transport, colon, destination = self.policy_filter.partition(":")
        if not (transport and colon and destination) or any(c.isspace() for c in self.policy_filter):
            raise ValueError(
                f'policy_filter: a FILTER "transport:destination" such as "bouncekeeper:[127.0.0.1]:10027",'
                f" not {self.policy_filter!r}"
            )


@dataclass(frozen=True)
class LmtpSettings:
    # "HOST:PORT" or "unix:/path". The default is the socket the Exim files (exim/) and the systemd
    # unit's RuntimeDirectory expect.
    listen: str = "unix:/run/bouncekeeper/lmtp.sock"
    # Plain SMTP as well, for MTAs that forward bounces by SMTP: "HOST:PORT", or "" for none.
    smtp_listen: str = ""
    # Permissions of a unix socket ("0660" or 0o660): the MTA's user (Debian-exim) must be able to write it.
    socket_mode: FileMode = SOCKET_MODE
    # Largest message accepted (octets); larger ones get 552 5.3.4 (RFC 1870), after the data is read.
    max_message_size: int = 10_485_760
    # Idle time before a session is closed (RFC 5321 section 4.5.3.2.7: a server waits 5 minutes).
    timeout: float = 300.0
    # Threads that classify and write to Redis: how many messages are processed at the same time.
    workers: int = 8
    # Name in the greeting; empty: the host name.
    hostname: str = ""
    # Prometheus `GET /metrics` at "HOST:PORT" (no authentication: loopback); "": off.
    metrics_listen: str = ""
    # Recipients per transaction; beyond it 452 4.5.3 (RFC 5321 section 4.5.3.1.10: the client sends
    # the rest in another transaction). A bounce answers one envelope: one recipient.
    max_recipients: int = 100
    # Sessions at the same time; a further connection gets 421 4.3.2 and is closed.
    max_connections: int = 200
    # Any session is closed this long after it opened, busy or not (a slow client holds nothing forever).
    session_timeout: float = 1800.0
    # Clients that are the MTA in front of the listener (a unix socket always is): the limits on forged
    # bounce addresses (core/throttle.py) do not apply to them, as they pass on what the internet sent.
    trusted_clients: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

    def __post_init__(self) -> None:
        _check_positive(self, "max_recipients", "max_connections", "session_timeout", "timeout")
        for index, network in enumerate(self.trusted_clients):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"trusted_clients[{index}]: {exc}") from exc
        for name in ("listen", "smtp_listen"):
            value = getattr(self, name)
            if value and not value.startswith("unix:") and not value.rpartition(":")[2].isdigit():
                raise ValueError(f'{name}: use "HOST:PORT" or "unix:/path", not {value!r}')
        if self.smtp_listen.startswith("unix:"):
            raise ValueError("smtp_listen: TCP only (HOST:PORT)")
        if self.workers < 1:
            raise ValueError("workers: at least 1")
        _check_metrics_listen(self.metrics_listen)


def _check_positive(settings: object, *names: str) -> None:
    for name in names:
        if not getattr(settings, name) > 0:
            raise ValueError(f"{name}: must be more than 0")


def _check_metrics_listen(value: str) -> None:
    if value:
        _check_host_port("metrics_listen", value, "127.0.0.1:9124")


def _check_host_port(name: str, value: str, example: str) -> None:
    host, _, port = value.rpartition(":")
    if not (host and port.isdigit() and int(port) <= 65535):
        raise ValueError(f'{name}: use "HOST:PORT" (e.g. "{example}"), not {value!r}')


# The events that change an address's state (and, optionally, every hard bounce): see notify.py.
NotifyEvent = Literal["disabled", "enabled", "escalated", "hard_bounce"]
ALL_NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("disabled", "enabled", "escalated", "hard_bounce")


@dataclass(frozen=True)
class NotifyTarget:
    """One application ("platform") that hears about state changes: `[[notify.targets]]`."""

    # Names the target in logs, metrics and the dead-letter stream. Required, unique.
    name: str = ""
    # Which events go here: those whose original mail was sent by one of these envelope senders (an exact
    # address, or "@domain" for any sender of the domain), or carried one of these VERP contexts.
    senders: tuple[str, ...] = ()
    contexts: tuple[str, ...] = ()
    # Receives every event no other target claims.
    default: bool = False
    events: tuple[NotifyEvent, ...] = ALL_NOTIFY_EVENTS
    # Per address: POST here; "{address}" is replaced by the URL-encoded address.
    url: str = ""
    # Batch callback: POST {"type": ..., "addresses": [...], "events": [...]} (eea.bounce style).
    batch_url: str = ""
    batch_size: int = 100
    # File with the HMAC-SHA256 key that signs each request (X-Bouncekeeper-Signature). Required.
    secret_file: str = ""
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name is required")
        if not self.url and not self.batch_url:
            raise ValueError(f"target {self.name!r}: set url, batch_url or both")
        if self.url and "{address}" not in self.url:
            raise ValueError(f"target {self.name!r}: url must contain {{address}}")
        for url in (self.url, self.batch_url):
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"target {self.name!r}: {url!r} is not an http(s) URL")
        if not self.secret_file:
            raise ValueError(f"target {self.name!r}: secret_file is required (requests are signed)")
        if self.batch_size < 1 or self.timeout <= 0:
            raise ValueError(f"target {self.name!r}: batch_size and timeout must be positive")


@dataclass(frozen=True)
class NotifySettings:
    # Also put every hard (permanent) bounce in the outbox, not only state changes.
    hard_bounces: bool = False
    # The store trims the outbox stream to about this many entries (XADD MAXLEN ~).
    outbox_maxlen: int = 1_000_000
    # Consumer name in the stream's consumer group; empty: the host name. A restarted notifier with the
    # same name takes up its own unacknowledged entries first.
    consumer: str = ""
    # Attempts per notification and target before it goes to the dead-letter stream.
    max_attempts: int = 10
    # Exponential backoff: initial * 2**(attempt-1), capped, with +-10 % jitter.
    backoff_initial: float = 2.0
    backoff_max: float = 600.0
    # Entries another (dead) notifier left unacknowledged this long are taken over (XAUTOCLAIM).
    claim_idle: float = 300.0
    # Longest wait for new entries in one XREADGROUP call.
    poll: float = 5.0
    targets: tuple[NotifyTarget, ...] = ()

    def __post_init__(self) -> None:
        names = [t.name for t in self.targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate target names: {', '.join(duplicates)}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


@dataclass(frozen=True)
class HttpSettings:
    listen: str = "127.0.0.1:8025"
    # File holding the bearer token of the API and the admin page. Required to start `bouncekeeper http`.
    token_file: str = ""
    # Largest request body (a raw bounce with its attachment), in bytes.
    max_body: int = 10 * 1024 * 1024
    # Rows per page of GET /suppressions and of the admin page.
    page_size: int = 100
    # Connections served at once (a thread each); at the cap the longest-waiting slow one is closed
    # (httpserver.py). Four times as many may wait for their first byte, without a thread.
    max_connections: int = 64
    # Seconds: for a request's first byte; from it to the end of the headers; to the end of the body.
    idle_timeout: float = 10.0
    header_timeout: float = 10.0
    request_timeout: float = 60.0
    # The admin page is reached through HTTPS (a TLS proxy): its session cookie gets `Secure`.
    secure_cookie: bool = False

    def __post_init__(self) -> None:
        _check_positive(self, "max_connections", "idle_timeout", "header_timeout", "request_timeout")
        # Here, not only when `bouncekeeper http` starts: `config check` and every other command see it.
        _check_host_port("listen", self.listen, "127.0.0.1:8025")


@dataclass(frozen=True)
class ImapSettings:
    server: str = ""
    port: int = 0  # 0: 993 with TLS, 143 without
    tls: Literal["tls", "starttls", "none"] = "tls"
    user: str = ""
    # The password: this file, else $BOUNCEKEEPER_IMAP_PASSWORD.
    password_file: str = ""
    folder: str = "INBOX"
    backup_folder: str = "FoundBounces"
    # CA bundle for a private CA or a self-signed server certificate; empty: the system's.
    ca_file: str = ""


@dataclass(frozen=True)
class ProbeSettings:
    enabled: bool = False
    # A disabled address gets one probe every `interval_days` days, at most `count` probes.
    interval_days: int = 7
    count: int = 4
    # The local MTA that sends probes.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    # From: header of the probe, and where the owner can re-enable the address ({address} allowed).
    sender: str = ""
    reenable_url: str = ""
    # A text file with a Subject: line, a blank line, then the body; {address} and {reenable_url}
    # are filled in. Empty: the built-in text.
    template_file: str = ""


@dataclass(frozen=True)
class Settings:
    state_dir: str = "/var/lib/bouncekeeper"
    log: LogSettings = field(default_factory=LogSettings)
    verp: VerpSettings = field(default_factory=VerpSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    # [policy], not [scoring]: the section's name in every operator's file (see ScoringSettings).
    policy: ScoringSettings = field(default_factory=ScoringSettings)
    milter: MilterSettings = field(default_factory=MilterSettings)
    lmtp: LmtpSettings = field(default_factory=LmtpSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    imap: ImapSettings = field(default_factory=ImapSettings)
    probes: ProbeSettings = field(default_factory=ProbeSettings)
    # Where the settings came from ("<defaults>" when no file was given); not a key.
    source: str = field(default="<defaults>", metadata={"internal": True})


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load settings from `path`, else $BOUNCEKEEPER_CONFIG, else DEFAULT_PATH if it exists, else defaults."""
    chosen = path if path is not None else os.environ.get(ENV_VAR) or None
    if chosen is None and os.path.exists(DEFAULT_PATH):
        chosen = DEFAULT_PATH
    if chosen is None:
        return Settings()
    name = str(chosen)
    try:
        raw = pathlib.Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(name, "", f"not valid TOML: {exc}") from exc
    return _settings(data, name)


def loads(text: str, name: str = "<string>") -> Settings:
    """Settings from TOML text (tests, `config check` of a pipe)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, "", f"not valid TOML: {exc}") from exc
    return _settings(data, name)


def read_secret(path: str, setting: str, source: str) -> bytes:
    """Read one key file without the white space around the key; an empty or unreadable file is a
    config error.

    Exactly what the Exim files do with the same file (their BK_SECRET strips `\\s` at both ends): a
    key written with a CRLF line end (Windows), a trailing space or none signs and verifies alike on
    both sides; white space inside the key is kept by both.
    """
    try:
        secret = pathlib.Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(source, setting, f"cannot read {path}: {exc.strerror}") from exc
    if len(secret) < 16:
        raise ConfigError(source, setting, f"{path}: key shorter than 16 bytes")
    return secret


def _dotted(settings: Settings, key: str) -> object:
    value: object = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def reread(current: Settings, restart_only: tuple[str, ...]) -> tuple[Settings, list[str]]:
    """The file `current` came from, read again (a daemon's SIGHUP), with the `restart_only` keys
    ("section" or "section.key") kept as they run; also returns those of them that the file changed."""
    fresh = load(current.source) if current.source != "<defaults>" else Settings()
    # A relative state_dir is the daemon's folder at start-up: compared and kept as an absolute path.
    fresh = dataclasses.replace(fresh, state_dir=os.path.abspath(fresh.state_dir))
    current = dataclasses.replace(current, state_dir=os.path.abspath(current.state_dir))
    changed = [key for key in restart_only if _dotted(fresh, key) != _dotted(current, key)]
    for key in restart_only:
        section, _, name = key.partition(".")
        if not name:
            fresh = dataclasses.replace(fresh, **{section: getattr(current, section)})
        else:
            kept = dataclasses.replace(getattr(fresh, section), **{name: _dotted(current, key)})
            fresh = dataclasses.replace(fresh, **{section: kept})
    return fresh, changed


def _settings(data: dict[str, object], path: str) -> Settings:
    try:
        settings = tomlschema.build(Settings, data)
    except tomlschema.SchemaError as exc:
        # Chained to a settings class's own ValueError when there is one: the traceback shows that check.
        raise ConfigError(path, exc.key, exc.problem) from exc.__cause__
    return dataclasses.replace(settings, source=path)
