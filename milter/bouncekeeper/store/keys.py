"""The Redis key schema: the one place key names are made and parsed.

Every key starts with the configured prefix (default `bk:`). Per-address keys carry the normalised address
inside braces, `bk:{alice@example.org}:state`: readable with redis-cli, and a Redis Cluster hash tag, so
every key of one address lives in one slot and one Lua script can update them atomically. Domain keys use
the domain as their tag. The "Redis keys" table in docs/redis.md documents each key; keep it in step.
"""

from __future__ import annotations

from dataclasses import dataclass

# Per-address key suffixes.
STATE = "state"  # hash: state, since, by. Absent means active. Never expires.
SOFT = "soft"  # string counter, TTL = soft window after the last soft failure
# string: line 1 "score<TAB>day" (the daily rule's hard score and the day number of its last rise; "0<TAB>"
# when no score is live), then the history lines (store/event.py), newest first, capped at history_size.
# One key per tracked address, not a score key and a history key: on Redis 7.0 (no per-field expiry) a
# key with a TTL costs about 150 bytes before its value, so two keys alone would spend the 300 bytes an
# idle tracked address may cost (docs/redis.md, "Store throughput and memory"). Its TTL: while a
# score is live, the quiet period after the last rise (the score resets by Redis TTL, taking the history with
# it); without one, history_days after the last event. The full events stay in the global stream.
TRACK = "track"
HITS = "hits"  # zset event id -> time, the count rule's window; TTL = that window
SEEN = "seen"  # seen:<event id> string, TTL = dedup window: this bounce was already counted
# replay:<VERP id> string, TTL = the VERP validity: this signed VERP address (or token) already scored for
# this address (record.lua); one per signed address that scored, so no stranger can multiply them
REPLAY = "replay"
# list of outbox entries not yet in the outbox stream: Redis Cluster only (notify.py relays them)
OUTBOX = "notify"
# list of JSON probe records, newest first, capped (probes.py); never expires (a few per address)
PROBES = "probes"
# Keys of earlier builds, read but no longer written. ":hard" (hash score, day; TTL = the quiet period)
# is moved into ":track" by the address's next event, keeping its TTL, and deleted by enable/reset;
# ":history" (a string of long lines, TTL history_days) is shown after the new history until it expires.
LEGACY_HARD = "hard"
LEGACY_HISTORY = "history"

ADDRESS_SUFFIXES = (STATE, SOFT, TRACK, HITS)


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "bk:"

    def address(self, address: str, suffix: str) -> str:
        return f"{self.prefix}{{{address}}}:{suffix}"

    def seen(self, address: str, event_id: str) -> str:
        return f"{self.prefix}{{{address}}}:{SEEN}:{event_id}"

    def replay(self, address: str, verp_id: str) -> str:
        return f"{self.prefix}{{{address}}}:{REPLAY}:{verp_id}"

    def record_keys(self, address: str, event_id: str) -> list[str]:
        """KEYS 1-6 of record.lua, in its order (7 is the outbox, 8 `replay`)."""
        return [
            *(self.address(address, s) for s in (STATE, SOFT, TRACK, HITS, LEGACY_HARD)),
            self.seen(address, event_id),
        ]

    def admin_keys(self, address: str) -> list[str]:
        """KEYS of admin.lua, in its order."""
        return [self.address(address, s) for s in (STATE, SOFT, TRACK, HITS, LEGACY_HARD)]

    def failing(self, domain: str) -> str:
        """zset address -> time of its last scored failure, the breaker's sliding window."""
        return f"{self.prefix}domain:{{{domain}}}:failing"

    def frozen(self, domain: str) -> str:
        """hash since, addresses: exists while the domain's circuit breaker is open."""
        return f"{self.prefix}domain:{{{domain}}}:frozen"

    @property
    def stream(self) -> str:
        """The global event stream (XADD MAXLEN ~ stream_size)."""
        return f"{self.prefix}events"

    # The notifier's keys share the hash tag {outbox}: one slot, so its MULTI steps work on a cluster.
    @property
    def outbox(self) -> str:
        """The outbox stream of state-change notifications (notify.py; consumer group "notify")."""
        return f"{self.prefix}{{outbox}}:stream"

    @property
    def outbox_dead(self) -> str:
        """Notifications that could not be delivered (`bouncekeeper notify dead-letters`)."""
        return f"{self.prefix}{{outbox}}:dead"

    @property
    def outbox_stats(self) -> str:
        """hash "result:target" -> count: the notifier's deliveries, for /metrics of `bouncekeeper http`."""
        return f"{self.prefix}{{outbox}}:stats"

    def outbox_progress(self, entry_id: str) -> str:
        """hash: which targets have an outbox entry, attempts and next try per target."""
        return f"{self.prefix}{{outbox}}:state:{entry_id}"

    @property
    def stats(self) -> str:
        """hash of counters: events by kind, duplicates, breaker trips."""
        return f"{self.prefix}stats"

    def token(self, token: str) -> str:
        """hash recipients, message_id, sender, context: a multi-recipient VERP token."""
        return f"{self.prefix}token:{token}"

    def session(self, digest: str) -> str:
        """string: an admin page session (httpd.py), by the SHA-256 of its cookie; TTL = its lifetime."""
        return f"{self.prefix}session:{digest}"

    def unvouched(self, event_id: str) -> str:
        """string, TTL = dedup window: this message's `unvouched` stream entry was written (once per
        message, whatever the number of its envelope recipients or deliveries)."""
        return f"{self.prefix}unvouched:{event_id}"

    def imap_cursor(self, folder: str) -> str:
        """hash: the UID state of one mailbox folder (imap.py), by "user@server/folder"."""
        return f"{self.prefix}imap:{{{folder}}}:cursor"

    def imap_lock(self, folder: str) -> str:
        """string with a TTL: one `bouncekeeper imap` run at a time per folder."""
        return f"{self.prefix}imap:{{{folder}}}:lock"

    @property
    def probes_lock(self) -> str:
        """string with a TTL: one `bouncekeeper probes` run at a time."""
        return f"{self.prefix}probes:lock"

    def raw(self, event_id: str) -> str:
        """string: the raw bounce, when raw_days > 0."""
        return f"{self.prefix}raw:{event_id}"

    def address_pattern(self, suffix: str) -> str:
        """A SCAN MATCH pattern for one suffix of every address (the prefix escaped for globbing)."""
        return f"{_glob_escape(self.prefix)}\\{{*}}:{suffix}"

    def frozen_pattern(self) -> str:
        return f"{_glob_escape(self.prefix)}domain:\\{{*}}:frozen"

    def parse_address(self, key: str | bytes) -> str | None:
        """The address in a per-address key, or None when the key is not one."""
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if not text.startswith(self.prefix + "{"):
            return None
        inner, sep, _suffix = text[len(self.prefix) + 1 :].rpartition("}:")
        return inner if sep else None

    def parse_domain(self, key: str | bytes) -> str | None:
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        head = self.prefix + "domain:{"
        if not text.startswith(head):
            return None
        inner, sep, _suffix = text[len(head) :].rpartition("}:")
        return inner if sep else None


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
