"""`bouncekeeper imap`: scan a mailbox for bounces, record them, move them to a backup folder.

For sites whose bounces land in a mailbox rather than pass the MTA (eea.bounce's way). Safe from cron:
- A lock in Redis (SET NX with a TTL) keeps two runs on the same mailbox from overlapping.
- The highest UID done is kept in Redis per server, user and folder, with the folder's UIDVALIDITY
  (RFC 3501 section 2.3.1.1: UIDs only mean something together with it). The next run fetches only
  newer UIDs; messages that are not bounces stay in the folder and are not read again.
- A message is recorded first, then moved, then its UID is marked done. A run interrupted between
  those steps reads the message again next time, and the store's idempotency (each bounce has an event
  id, recorded once per address) keeps it from being counted twice.
- BODY.PEEK (RFC 3501 section 6.4.5): reading never sets \\Seen on the messages we leave.
- MOVE (RFC 6851) when the server has it; else COPY, \\Deleted and UID EXPUNGE (RFC 4315) or EXPUNGE.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import imaplib
import os
import re
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from bouncekeeper import config
from bouncekeeper.core.addresses import normalise
from bouncekeeper.core.model import MessageType
from bouncekeeper.core.rcpt import received
from bouncekeeper.core.verp import VerpResult, VerpStatus
from bouncekeeper.daemons import metrics
from bouncekeeper.log import get_logger
from bouncekeeper.service.bounces import Arrival, Service
from bouncekeeper.store import Store, StoreUnavailable
from bouncekeeper.store.cursor import FolderCursor
from bouncekeeper.store.event import Source
from bouncekeeper.store.runlock import Busy

log = get_logger("bouncekeeper.imap")  # as before the folders: log filters use it

PASSWORD_ENV = "BOUNCEKEEPER_IMAP_PASSWORD"  # noqa: S105 -- the name of a variable, not a password
LOCK_TTL = 6 * 3600  # a run never takes this long; a crashed run's lock expires by itself
# Headers that carry the envelope recipient (the VERP address) of a delivered message, best first.
ENVELOPE_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To", "To")


@dataclass(frozen=True)
class Handled:
    """What the service made of one message."""

    is_bounce: bool  # recognised: moved to the backup folder
    summary: str


Process = Callable[[bytes, Sequence[str]], Handled]


@dataclass
class Report:
    seen: int = 0
    bounces: int = 0
    left: int = 0
    last_uid: int = 0


def quote(mailbox: str) -> str:
    # imaplib sends arguments as they are: a name with a space or a quote must be a quoted string.
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def envelope_candidates(raw: bytes) -> list[str]:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    found: list[str] = []
    for name in ENVELOPE_HEADERS:
        for value in headers.get_all(name) or []:
            text = str(value).strip()
            if text and text not in found:
                found.append(text)
    return found


def folder_cursor(store: Store, server: str, user: str, folder: str) -> FolderCursor:
    """The UID state and the run lock of one mailbox folder, in the store."""
    return FolderCursor(store, f"{user}@{server}/{folder}", LOCK_TTL)


__all__ = ["Busy", "Handled", "Options", "Report", "ScanJob", "connect", "folder_cursor", "run", "scan"]


def _ok(typ: str, data: Any, what: str) -> Any:
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{what}: {typ} {data!r}")
    return data


class Progress:
    """A one-line progress bar on a terminal; silent otherwise (cron mails whatever a job prints)."""

    def __init__(self, total: int, out: TextIO, enabled: bool) -> None:
        self.total = total
        self.out = out
        self.enabled = enabled and total > 0

    def update(self, done: int, bounces: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * done // self.total
        self.out.write(
            f"\rimap: [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} bounces={bounces}"
        )
        self.out.flush()

    def close(self) -> None:
        if self.enabled:
            self.out.write("\n")
            self.out.flush()


@dataclass(frozen=True)
class ScanJob:
    """What one pass does: which folder it reads, where bounces go, what handles a message."""

    folder: str
    backup_folder: str
    process: Process
    limit: int | None = None  # at most this many messages
    progress_out: TextIO | None = None  # a progress bar here; None: on stderr if it is a terminal


def scan(conn: imaplib.IMAP4, cursor: FolderCursor, job: ScanJob) -> Report:
    """One pass over `job.folder`: every message newer than the cursor, in UID order."""
    folder, backup_folder = job.folder, job.backup_folder
    data = _ok(*conn.select(quote(folder)), f"SELECT {folder}")
    del data
    _typ, validity = conn.response("UIDVALIDITY")
    uidvalidity = int(validity[0]) if validity and validity[0] else 0
    stored_validity, last_uid = cursor.load()
    if stored_validity != uidvalidity:
        if stored_validity:
            log.warning(
                "imap: %s UIDVALIDITY changed (%s -> %s): rescanning", folder, stored_validity, uidvalidity
            )
        last_uid = 0
    # "N:*" always includes the highest UID even when it is below N (RFC 3501 section 6.4.8): filter.
    found = _ok(*conn.uid("SEARCH", f"UID {last_uid + 1}:*"), "UID SEARCH")
    uids = sorted(u for u in (int(x) for x in (found[0] or b"").split()) if u > last_uid)
    if job.limit is not None:
        uids = uids[: job.limit]
    report = Report(last_uid=last_uid)
    if not uids:
        return report
    typ, _ = conn.create(quote(backup_folder))
    if typ != "OK":
        log.debug("imap: CREATE %s: %s (it exists)", backup_folder, typ)
    capabilities = {c.upper() for c in conn.capabilities}
    out = job.progress_out if job.progress_out is not None else sys.stderr
    progress = Progress(len(uids), out, enabled=job.progress_out is not None or out.isatty())
    try:
        for uid in uids:
            fetched = _ok(*conn.uid("FETCH", str(uid), "(BODY.PEEK[])"), f"UID FETCH {uid}")
            raw = next((part[1] for part in fetched if isinstance(part, tuple)), None)
            if raw is None:
                log.info("imap: UID %s vanished before it was read", uid)
            else:
                handled = job.process(raw, envelope_candidates(raw))
                report.seen += 1
                if handled.is_bounce:
                    _move(conn, uid, backup_folder, capabilities)
                    report.bounces += 1
                    log.info("imap: UID %s: %s; moved to %s", uid, handled.summary, backup_folder)
                else:
                    report.left += 1
                    log.info("imap: UID %s: %s; left in %s", uid, handled.summary, folder)
            cursor.save(uidvalidity, uid)
            report.last_uid = uid
            progress.update(report.seen, report.bounces)
    finally:
        progress.close()
    return report


def _move(conn: imaplib.IMAP4, uid: int, mailbox: str, capabilities: set[str]) -> None:
    if "MOVE" in capabilities:
        _ok(*conn.uid("MOVE", str(uid), quote(mailbox)), f"UID MOVE {uid}")
        return
    _ok(*conn.uid("COPY", str(uid), quote(mailbox)), f"UID COPY {uid}")
    _ok(*conn.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)"), f"UID STORE {uid}")
    if "UIDPLUS" in capabilities:
        _ok(*conn.uid("EXPUNGE", str(uid)), f"UID EXPUNGE {uid}")
    else:
        _ok(*conn.expunge(), "EXPUNGE")


# --- connection and command line --------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    server: str
    port: int
    tls: str
    user: str
    password: str
    folder: str
    backup_folder: str
    ca_file: str


def connect(options: Options, timeout: float = 60.0) -> imaplib.IMAP4:
    context = ssl.create_default_context(cafile=options.ca_file or None)
    conn: imaplib.IMAP4
    if options.tls == "tls":
        conn = imaplib.IMAP4_SSL(options.server, options.port or 993, ssl_context=context, timeout=timeout)
    else:
        conn = imaplib.IMAP4(options.server, options.port or 143, timeout=timeout)
        if options.tls == "starttls":
            conn.starttls(ssl_context=context)  # fails if the server cannot: never fall back to plaintext
    conn.login(options.user, options.password)
    return conn


def read_password(password_file: str, source: str) -> str:
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise config.ConfigError(
                source, "imap.password_file", f"cannot read {password_file}: {exc.strerror}"
            ) from exc
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        raise config.ConfigError(source, "imap.password_file", f"set a password file or ${PASSWORD_ENV}")
    return password


def options_from(args: argparse.Namespace, settings: config.Settings) -> Options:
    s = settings.imap
    server = args.server or s.server
    user = args.user or s.user
    if not server or not user:
        raise config.ConfigError(
            settings.source, "imap.server", "name the IMAP server and user (--server, --user)"
        )
    return Options(
        server=server,
        port=args.port if args.port is not None else s.port,
        tls=args.tls or s.tls,
        user=user,
        password=read_password(args.password_file or s.password_file, settings.source),
        folder=args.folder or s.folder,
        backup_folder=args.backup_folder or s.backup_folder,
        ca_file=args.ca_file or s.ca_file,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help="IMAP server host name ([imap] server)")
    parser.add_argument("--port", type=int, help="port (default 993 with TLS, else 143)")
    parser.add_argument("--tls", choices=("tls", "starttls", "none"), help="default: tls")
    parser.add_argument("--user", help="login name")
    parser.add_argument("--password-file", help=f"file with the password (else ${PASSWORD_ENV})")
    parser.add_argument("--folder", help="folder to scan (default INBOX)")
    parser.add_argument("--backup-folder", help="where recognised bounces go (default FoundBounces)")
    parser.add_argument("--ca-file", help="CA certificate(s) to trust for the server")
    parser.add_argument("--limit", type=int, help="process at most this many messages in this run")


def run(
    options: Options,
    *,
    store: Store,
    process: Process,
    limit: int | None = None,
    progress_out: TextIO | None = None,
) -> Report:
    cursor = folder_cursor(store, options.server, options.user, options.folder)
    cursor.acquire()
    try:
        conn = connect(options)
        try:
            job = ScanJob(options.folder, options.backup_folder, process, limit, progress_out)
            return scan(conn, cursor, job)
        finally:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error) as exc:
                log.debug("imap: logout: %s", exc)
    finally:
        cursor.release()


def is_verp_shaped(address: str, local_prefix: str) -> bool:
    return re.match(re.escape(local_prefix) + r"\+", address.strip("<> \t"), re.IGNORECASE) is not None


def service_process(service: Service, local_prefix: str) -> Process:
    """The scanner's `process` on the real service: the VERP envelope address from the headers."""

    def process(raw: bytes, candidates: Sequence[str]) -> Handled:
        rcpt, checked = _pick_envelope(service, candidates, local_prefix)
        # No RCPT stage here: the verdict of a message already in the mailbox (core/rcpt.py), from the
        # decode the pick made, so that the address is decoded once.
        verdict = received(checked) if checked is not None else None
        outcome = service.process_bounce(Arrival(raw, Source.IMAP, envelope_rcpt=rcpt, verdict=verdict))
        metrics.observe("imap", outcome)
        c = outcome.classification
        recognised = not outcome.forged and c.message_type in (MessageType.BOUNCE, MessageType.DELAY)
        return Handled(recognised, outcome.summary())

    return process


def _pick_envelope(
    service: Service, candidates: Sequence[str], local_prefix: str
) -> tuple[str | None, VerpResult | None]:
    """The envelope address and its decode: the first header address that decodes as valid VERP; else
    the first VERP-shaped one (so that a forged one is recorded as forged); else none: the classifier
    reads the DSN on its own."""
    addresses = [a for a in (normalise(c) for c in candidates) if a]
    shaped = [a for a in addresses if is_verp_shaped(a, local_prefix)]
    first: VerpResult | None = None
    for address in shaped:
        checked = service.check_rcpt(address)
        if checked.status is VerpStatus.VALID:
            return address, checked
        if first is None:
            first = checked
    return (shaped[0], first) if shaped else (None, None)


def command(args: argparse.Namespace, settings: config.Settings) -> int:
    """`bouncekeeper imap`: one pass over the folder; exit 75 (EX_TEMPFAIL) when cron should try again."""
    options = options_from(args, settings)
    service = Service.open(settings)
    try:
        report = run(
            options,
            store=service.store,
            process=service_process(service, settings.verp.local_prefix),
            limit=args.limit,
        )
    except Busy as exc:
        log.warning("imap: %s; not running twice", exc)
        return 75
    except (StoreUnavailable, OSError, imaplib.IMAP4.error) as exc:
        # Whatever was done is kept (cursor saved per message); the next run goes on from there.
        log.error("imap: stopped: %s", exc)
        return 75
    finally:
        service.close()
    log.info(
        "imap: %s: %d read, %d bounces moved to %s, %d left; last UID %d",
        options.folder, report.seen, report.bounces, options.backup_folder, report.left, report.last_uid,
    )  # fmt: skip
    return 0
