"""`bouncekeeper import FILE`: bring an existing suppression list into the store.

Formats (docs/import.md has their columns and where each comes from):
- `csv`: a header line naming an address column (`address`, `email`, `EmailAddress`, `recipient`) and
  optionally `state`, `reason`, a date (`since`, `date`, `created`, `created_at`, `CreatedAt`,
  `LastUpdateTime`) and `by`: `bouncekeeper export`'s CSV, Mailgun's bounce list (address, code, error,
  created_at), Postmark's suppressions (EmailAddress, SuppressionReason, Origin, CreatedAt), SendGrid's
  bounce and spam report exports (email, reason, status, created) and most home-made lists.
- `json`: `bouncekeeper export --json` (a list of objects with the same names), Amazon SES's
  `aws sesv2 list-suppressed-destinations` output ({"SuppressedDestinationSummaries": [...]}), SendGrid's
  `GET /v3/suppression/bounces` (a list of {email, created, reason, status}), Postmark's suppressions
  dump ({"Suppressions": [...]}), Mailgun's `GET /v3/DOMAIN/bounces` ({"items": [...]}), or another
  object with a list under `suppressions`, `items` or `entries` (keys compared without case).
- `mailman3`: Mailman 3's `mailman members --nomail bybounces LIST` output (one `Name <address>` or
  address a line), or its REST members ({"entries": [...]}) each with the `delivery_status` of its
  preferences added: Mailman's member representation does not carry it, and such an entry is a bad
  line rather than a member disabled by default.

Each address is normalised by core/addresses.py. A line that cannot be imported is reported as
`FILE:LINE: why` on stderr and the others are imported. Importing sets a state only on an address that is
active (the store's import.lua): a second run changes nothing, and no import overrides what an operator or
the bounces already decided.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import email.utils
import json
import pathlib
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bouncekeeper import config
from bouncekeeper.core.addresses import normalise
from bouncekeeper.core.scoring import State
from bouncekeeper.log import get_logger

log = get_logger("bouncekeeper.importer")  # as before the folders: log filters use it

FORMATS = ("auto", "csv", "json", "mailman3")
EX_DATAERR = 65  # sysexits.h: some lines were not imported
EX_TEMPFAIL = 75
BATCH = 500  # rows per store round trip
MAX_FILE_BYTES = 512 * 1024 * 1024  # a JSON file is read whole: bounded
MAX_TEXT = 200  # a reason or `by` kept from a file, in characters

_ADDRESS_COLUMNS = ("address", "email", "emailaddress", "email_address", "recipient", "to")
_LINKS = ("http://", "https://")
_DATE_COLUMNS = ("since", "date", "created", "created_at", "createdat", "lastupdatetime", "timestamp")
_REASON_COLUMNS = ("reason", "suppressionreason", "error", "type")
# Where an API page keeps its list, compared without case: SES's SuppressedDestinationSummaries,
# Postmark's Suppressions (its suppressions dump), Mailgun's items, Mailman 3's REST entries.
_LIST_KEYS = ("suppresseddestinationsummaries", "suppressions", "items", "entries")
# Fields every member in Mailman 3's REST representation has (mailman.rest.members); its delivery
# status is not one of them: that lives in the member's preferences resource.
_MAILMAN_MEMBER = ("member_id", "list_id")

# What other systems call a suppression, and the state it is here. A bounce list is disabled-bounces; a
# complaint or an unsubscribe is the user's wish; anything put there by hand is an admin's.
_STATE_WORDS = {
    "bounce": State.DISABLED_BOUNCES,
    "bounces": State.DISABLED_BOUNCES,
    "hardbounce": State.DISABLED_BOUNCES,
    "hard_bounce": State.DISABLED_BOUNCES,
    "invalid": State.DISABLED_BOUNCES,
    "by_bounces": State.DISABLED_BOUNCES,
    "bybounces": State.DISABLED_BOUNCES,
    "complaint": State.DISABLED_USER,
    "spamcomplaint": State.DISABLED_USER,
    "spam_complaint": State.DISABLED_USER,
    "spam": State.DISABLED_USER,
    "unsubscribe": State.DISABLED_USER,
    "unsubscribed": State.DISABLED_USER,
    "by_user": State.DISABLED_USER,
    "byuser": State.DISABLED_USER,
    "manual": State.DISABLED_ADMIN,
    "manualsuppression": State.DISABLED_ADMIN,
    "by_moderator": State.DISABLED_ADMIN,
    "bymoderator": State.DISABLED_ADMIN,
    "by_admin": State.DISABLED_ADMIN,
}
# The `by` a state gets when the file does not say (what record.lua and admin.lua write).
_BY = {State.DISABLED_BOUNCES: "bounces", State.DISABLED_USER: "user", State.DISABLED_ADMIN: "admin"}


class BadLine(ValueError):
    """One line that cannot be imported: `where` is FILE:LINE."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.where = where


@dataclass(frozen=True, slots=True)
class Row:
    """One suppression read from a file; `state` None: the file says the address is active."""

    where: str
    address: str
    state: State | None
    since: float | None
    by: str
    reason: str


def parse_date(text: str) -> float:
    """ISO 8601 (a `Z` or an offset; none is UTC), RFC 2822 (Mailgun's), or epoch seconds (SendGrid's)."""
    text = text.strip()
    if text.replace(".", "", 1).isdigit():
        value = float(text)
        return value / 1000 if value > 1e11 else value  # milliseconds, as some APIs give them
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", "+00:00"))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise ValueError(f"not a date: {text[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def parse_state(text: str, default: State) -> State | None:
    """A state as this file names it: bouncekeeper's own, or another system's word for it. None: active.
    An empty cell is `default`."""
    word = text.strip().lower().replace(" ", "_").replace("-", "_")
    if not word:
        return default
    if word in ("active", "enabled"):
        return None
    for state in State:
        if word == state.value.replace("-", "_"):
            return state if state is not State.ACTIVE else None
    if word in _STATE_WORDS:
        return _STATE_WORDS[word]
    raise ValueError(f"unknown state {text[:40]!r}")


def _values(record: Mapping[str, Any], names: Iterable[str]) -> Iterator[str]:
    """The non-empty values among these column names (compared without case), in the names' order."""
    lowered = {str(k).strip().lower(): v for k, v in record.items()}
    for name in names:
        value = lowered.get(name)
        if value not in (None, ""):
            yield str(value)


def _pick(record: Mapping[str, Any], names: Iterable[str]) -> str:
    """The first non-empty value among these column names (compared without case)."""
    return next(_values(record, names), "")


def row_from(record: Mapping[str, Any], where: str, default: State) -> Row:
    """A Row from one record of any format (its column names compared without case)."""
    # A link is not an address: Mailman 3's REST member has `address` as the URL of its address
    # resource (.../3.1/addresses/anne@example.com) and the address itself as `email`.
    raw = next((v for v in _values(record, _ADDRESS_COLUMNS) if not v.startswith(_LINKS)), "")
    if not raw:
        raise BadLine(where, "no address")
    address = normalise(raw)
    if address is None:
        raise BadLine(where, f"not an address: {raw[:80]!r}")
    reason = _pick(record, _REASON_COLUMNS)
    state_text = _pick(record, ("state", "delivery_status"))
    if not state_text and all(_pick(record, (name,)) for name in _MAILMAN_MEMBER):
        # A roster lists every member, enabled or not: the default state would disable them all.
        raise BadLine(
            where,
            "a Mailman member without delivery_status (it is in /members/ID/preferences:"
            " add it, or use `mailman members --nomail bybounces`)",
        )
    try:
        # A reason that names a kind of suppression (Postmark's HardBounce, SES's BOUNCE) says the state
        # when no state column does.
        word = reason.strip().lower().replace(" ", "_")
        if not state_text and word in _STATE_WORDS:
            state_text = reason
            # Postmark has no unsubscribe reason: a recipient's click on its unsubscribe link lists the
            # address as a ManualSuppression whose Origin is Recipient, the user's wish, not an admin's.
            if word == "manualsuppression" and _pick(record, ("origin",)).strip().lower() == "recipient":
                state_text = "unsubscribe"
        state = parse_state(state_text, default)
        date = _pick(record, _DATE_COLUMNS)
        since = parse_date(date) if date else None
    except ValueError as exc:
        raise BadLine(where, str(exc)) from None
    by = _pick(record, ("by", "origin"))[:MAX_TEXT] or (_BY[state] if state else "")
    return Row(where, address, state, since, by, reason[:MAX_TEXT])


def _csv_rows(path: pathlib.Path, default: State) -> Iterator[Row | BadLine]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.DictReader(f)
        header = [str(h).strip().lower() for h in reader.fieldnames or []]
        if not any(name in header for name in _ADDRESS_COLUMNS):
            yield BadLine(
                f"{path}:1", f"no address column in the header (one of {', '.join(_ADDRESS_COLUMNS)})"
            )
            return
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a field over csv's limit: this line only
                # The reader raises before it counts the line it was reading.
                yield BadLine(f"{path}:{reader.line_num + 1}", f"not CSV: {exc}")
                continue
            where = f"{path}:{reader.line_num}"
            if None in record:
                yield BadLine(where, "more fields than the header names")
                continue
            yield _row_or_bad(record, where, default)


def _row_or_bad(record: Mapping[str, Any], where: str, default: State) -> Row | BadLine:
    # A bad line is reported and the file goes on: the generators yield it rather than raise it.
    try:
        return row_from(record, where, default)
    except BadLine as exc:
        return exc


def _json_line(text: str, index: int) -> int:
    """The line of a JSON file where its `index`-th list element starts (for the error messages)."""
    return text.count("\n", 0, index) + 1


def _json_rows(path: pathlib.Path, default: State) -> Iterator[Row | BadLine]:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        yield BadLine(f"{path}:{exc.lineno}", f"not JSON: {exc.msg}")
        return
    if isinstance(data, dict):
        lowered = {str(key).lower(): value for key, value in data.items()}
        data = next((lowered[key] for key in _LIST_KEYS if isinstance(lowered.get(key), list)), None)
    if not isinstance(data, list):
        yield BadLine(f"{path}:1", "not a list of suppressions (nor an object holding one)")
        return
    # Each element's line: found by decoding the list element by element (json gives no positions).
    decoder, pos = json.JSONDecoder(), text.index("[") + 1
    for record in data:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        where = f"{path}:{_json_line(text, pos)}"
        with contextlib.suppress(json.JSONDecodeError):  # the whole text decoded: cannot fail
            _, pos = decoder.raw_decode(text, pos)
        if not isinstance(record, dict):
            yield BadLine(where, "not an object")
            continue
        yield _row_or_bad(record, where, default)


def _mailman_rows(path: pathlib.Path, default: State) -> Iterator[Row | BadLine]:
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        head = f.read(1).lstrip()
    if head in ("{", "["):
        yield from _json_rows(path, default)
        return
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            # `mailman members` says so instead of printing nothing for an empty roster.
            if not text or text.startswith("#") or (number == 1 and text.endswith(" has no members")):
                continue
            try:
                yield row_from({"address": text}, f"{path}:{number}", default)
            except BadLine as exc:
                yield exc


def rows(path: pathlib.Path, fmt: str, default: State) -> Iterator[Row | BadLine]:
    """The file's suppressions and its bad lines, in file order."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB; split it")
    if fmt == "auto":
        fmt = guess_format(path)
    readers = {"csv": _csv_rows, "json": _json_rows, "mailman3": _mailman_rows}
    yield from readers[fmt](path, default)


def guess_format(path: pathlib.Path) -> str:
    if path.suffix.lower() == ".json":
        return "json"
    if path.suffix.lower() == ".csv":
        return "csv"
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        first = f.readline().strip()
    if first.startswith(("{", "[")):
        return "json"
    return "csv" if "," in first else "mailman3"


# --- the command --------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--format", choices=FORMATS, default="auto", help="the file's format (default: by its name)"
    )
    p.add_argument(
        "--state",
        choices=[s.value for s in State if s is not State.ACTIVE],
        default=State.DISABLED_BOUNCES.value,
        help="the state of rows that do not say (default disabled-bounces)",
    )
    p.add_argument("--dry-run", action="store_true", help="read and check everything, change nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def command(args: argparse.Namespace, settings: config.Settings) -> int:
    from bouncekeeper import store  # noqa: PLC0415 - the store only once the file is found
    from bouncekeeper.service import admin  # noqa: PLC0415 - the store only once the file is found

    path = pathlib.Path(args.file)
    default = State(args.state)
    try:
        # The bar's total, read first only when there is a terminal to show it on.
        total = sum(1 for _ in rows(path, args.format, default)) if sys.stderr.isatty() else 0
    except (OSError, ValueError) as exc:
        print(f"bouncekeeper: {exc}", file=sys.stderr)
        return admin.EX_USAGE
    try:
        st = store.connect(settings)
    except store.StoreUnavailable as exc:
        print(f"bouncekeeper: store unavailable: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    try:
        # rows() is a generator: its checks (size, format) and reads fail inside this try, not before it.
        tally = run_import(st, path, rows(path, args.format, default), dry_run=args.dry_run, total=total)
    except store.StoreUnavailable as exc:
        print(f"bouncekeeper: store unavailable: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except (OSError, ValueError) as exc:
        print(f"bouncekeeper: {exc}", file=sys.stderr)
        return admin.EX_USAGE
    finally:
        st.close()
    summary = {"file": str(path), "dry_run": args.dry_run, **dict(sorted(tally.items()))}
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        verb = "would import" if args.dry_run else "imported"
        print(
            f"{path}: {verb} {tally['imported']}, unchanged {tally['unchanged']} (already suppressed),"
            f" active in the file {tally['active']}, duplicates {tally['duplicates']},"
            f" bad lines {tally['bad']}"
        )
    return EX_DATAERR if tally["bad"] else 0


def run_import(
    st: Any, path: pathlib.Path, items: Iterable[Row | BadLine], *, dry_run: bool, total: int
) -> Counter[str]:
    """Write the suppressions `items` reads from `path` (`rows`) in batches, report bad lines on stderr;
    the tally."""
    from bouncekeeper.service.admin import Progress  # noqa: PLC0415 - it imports the store, as this does

    progress = Progress(total)
    tally: Counter[str] = Counter(imported=0, unchanged=0, active=0, duplicates=0, bad=0)
    seen: set[str] = set()
    pending: list[Row] = []
    now = time.time()
    for item in items:
        progress.step()
        if isinstance(item, BadLine):
            tally["bad"] += 1
            print(item, file=sys.stderr)
            continue
        if item.address in seen:
            tally["duplicates"] += 1  # the first line naming an address decides
            continue
        seen.add(item.address)
        if item.state is None:
            tally["active"] += 1  # an import never re-enables: that is `bouncekeeper enable`
            continue
        pending.append(item)
        if len(pending) >= BATCH:
            _write(st, pending, now, tally, dry_run=dry_run)
            pending = []
    _write(st, pending, now, tally, dry_run=dry_run)
    log.info("import %s: %s", path, " ".join(f"{k}={v}" for k, v in sorted(tally.items())))
    return tally


def _write(st: Any, batch: list[Row], now: float, tally: Counter[str], *, dry_run: bool) -> None:
    from bouncekeeper.store.event import Event, EventKind, Source  # noqa: PLC0415
    from bouncekeeper.store.model import Suppression  # noqa: PLC0415

    if not batch:
        return
    if dry_run:
        before = st.states([r.address for r in batch])
    else:
        suppressions = [
            Suppression(
                address=r.address,
                state=r.state or State.DISABLED_BOUNCES,
                since=r.since if r.since is not None else now,
                by=r.by,
                event=Event(
                    at=now,
                    kind=EventKind.DISABLED,
                    source=Source.CLI,
                    address=r.address,
                    # The file's own words (an ESP's "550 5.1.1 ..."): a note, not one of our reasons.
                    note=f"imported from {r.where}" + (f": {r.reason}" if r.reason else ""),
                ),
            )
            for r in batch
        ]
        before = st.import_suppressions(suppressions)
    for state in before:
        tally["imported" if state is State.ACTIVE else "unchanged"] += 1


__all__ = ["FORMATS", "BadLine", "Row", "add_arguments", "command", "parse_date", "parse_state", "rows"]
