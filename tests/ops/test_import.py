"""`bouncekeeper import`: each supported format with broken lines, run twice (the second changes nothing),
then exported and compared; export -> import into an empty store -> export gives the same list."""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import pty
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from bouncekeeper import cli
from bouncekeeper.config import RedisSettings
from bouncekeeper.core.scoring import State
from bouncekeeper.ops import importer
from bouncekeeper.store import Store
from bouncekeeper.store.event import Event, EventKind, Source
from bouncekeeper.store.model import Suppression
from tests.support.redis_server import RedisServer

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def conf(redis_db: RedisServer, tmp_path: pathlib.Path) -> str:
    path = tmp_path / "bk.toml"
    path.write_text(f'[redis]\nurl = "{redis_db.url}"\n')
    return str(path)


def run(conf: str, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--config", conf, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def export(conf: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    code, out, _ = run(conf, capsys, "export", "--json")
    assert code == 0
    rows: list[dict[str, str]] = json.loads(out)
    return rows


def imported(
    conf: str, capsys: pytest.CaptureFixture[str], path: pathlib.Path, *extra: str
) -> dict[str, int]:
    code, out, _ = run(conf, capsys, "import", str(path), "--json", *extra)
    summary: dict[str, int] = json.loads(out)
    summary["exit"] = code
    return summary


def _mailman_member(email: str, delivery_status: str | None) -> dict[str, object]:
    """One member as Mailman 3's REST API 3.1 shows it, with its preferences' delivery_status added."""
    member_id = uuid.uuid5(uuid.NAMESPACE_URL, email).hex
    member: dict[str, object] = {
        "address": f"http://localhost:9001/3.1/addresses/{email}",
        "delivery_mode": "regular",
        "email": email,
        "list_id": "ant.list.example",
        "member_id": member_id,
        "role": "member",
        "self_link": f"http://localhost:9001/3.1/members/{member_id}",
        "http_etag": '"1f6d3a0b"',
    }
    if delivery_status is not None:
        member["delivery_status"] = delivery_status
    return member


# Each format as its producer writes it (docs/import.md names the sources), with broken lines among them.
FILES = {
    # `bouncekeeper export` (admin.py): address,state,since,by.
    "own.csv": (
        "address,state,since,by\n"
        "Alice@Example.org,disabled-bounces,2026-01-02T03:04:05Z,bounces\n"
        "not-an-address,disabled-user,,user\n"
        "bob@example.org,disabled-user,2026-01-03T00:00:00Z,user\n"
        "carol@example.org,frozen,,admin\n"
        "dave@example.org,active,,\n"
        "erin@example.org,disabled-admin,yesterday,admin\n"
        "frank@example.org,disabled-admin,2026-02-01T00:00:00+01:00,admin\n"
    ),
    # Mailgun, the CSV POST /v3/{domain_name}/bounces/import takes ("Import list of bounces",
    # https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/bounces.md): the headers
    # address, code, error, created_at, the date in RFC 2822.
    "mailgun.csv": (
        "address,code,error,created_at\n"
        'gone@mg.example,550,No such user,"Tue, 02 Jan 2024 10:00:00 -0000"\n'
        ',550,No address,"Tue, 02 Jan 2024 10:00:00 -0000"\n'
        'old@mg.example,550,Mailbox disabled,"Wed, 03 Jan 2024 10:00:00 -0000"\n'
    ),
    # Postmark: the suppression dump's fields (see postmark-dump.json) as CSV columns. Postmark documents
    # no CSV of its own; this is a list an operator saved from the dump.
    "postmark.csv": (
        "EmailAddress,SuppressionReason,Origin,CreatedAt\n"
        "hb@pm.example,HardBounce,Recipient,2024-03-01T10:00:00-05:00\n"
        "sc@pm.example,SpamComplaint,Recipient,2024-03-02T10:00:00-05:00\n"
        "ms@pm.example,ManualSuppression,Customer,2024-03-03T10:00:00-05:00\n"
        "xx@pm.example,Sunburn,Recipient,2024-03-03T10:00:00-05:00\n"
    ),
    # SendGrid: the console's Suppressions > Bounces > Export CSV
    # (https://www.twilio.com/docs/sendgrid/ui/sending-email/bounces), whose page names no columns: the
    # API's field names (see sendgrid-bounces.json) are what is assumed and read here.
    "sendgrid.csv": (
        "email,reason,status,created\n"
        "sg1@sg.example,550 5.1.1 The email account does not exist,5.1.1,1700000000\n"
        "sg2@sg.example,extra,5.1.1,1700000000,surplus\n"
    ),
    # Amazon SES v2, `aws sesv2 list-suppressed-destinations` with the AWS CLI v2, which prints
    # timestamps in ISO 8601 (see ses-unix-time.json for the API's Unix time).
    "ses.json": json.dumps(
        {
            "SuppressedDestinationSummaries": [
                {
                    "EmailAddress": "b@ses.example",
                    "Reason": "BOUNCE",
                    "LastUpdateTime": "2024-05-01T00:00:00Z",
                },
                {
                    "EmailAddress": "c@ses.example",
                    "Reason": "COMPLAINT",
                    "LastUpdateTime": "2024-05-02T00:00:00Z",
                },
                "just a string",
                {"EmailAddress": "@ses.example", "Reason": "BOUNCE"},
            ]
        },
        indent=2,
    ),
    # Mailman 3's `mailman members` (mailman.commands.cli_members): one
    # email.utils.formataddr((display_name, original_email)) a line, so a name with a comma is quoted
    # and a non-ASCII one is an RFC 2047 encoded word.
    "mailman-members.txt": (
        "Anne Person <anne@list.example>\nbart@list.example\n\nNobody At All\n"
        '"Person, Cora" <cora@list.example>\n=?utf-8?b?w4VzYQ==?= <asa@list.example>\n'
    ),
    # Mailman 3's REST members (mailman.rest.members, _MemberBase._resource_as_dict, API 3.1): a
    # collection {"entries", "http_etag", "start", "total_size"}; each member has no delivery status, so
    # an exporter adds the delivery_status of GET /3.1/members/ID/preferences (enabled, by_user,
    # by_bounces, by_moderator, unknown: mailman.interfaces.member.DeliveryStatus).
    "mailman-roster.json": json.dumps(
        {
            "entries": [
                _mailman_member("m1@list.example", "by_bounces"),
                _mailman_member("m2@list.example", "by_user"),
                _mailman_member("m3@list.example", "enabled"),
                _mailman_member("m4@list.example", "sideways"),
                _mailman_member("m5@list.example", "by_moderator"),
                _mailman_member("m6@list.example", None),
            ],
            "http_etag": '"7b4c3ee4"',
            "start": 0,
            "total_size": 6,
        },
        indent=1,
    ),
    # SendGrid, GET /v3/suppression/bounces ("Retrieve all bounces",
    # https://www.twilio.com/docs/sendgrid/api-reference/bounces-api/retrieve-all-bounces): a JSON list of
    # BounceResponse {created: unix time (a number), email, reason, status: the enhanced code}.
    "sendgrid-bounces.json": json.dumps(
        [
            {
                "created": 1443651125,
                "email": "bounce1@sg.example",
                "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
                "status": "5.1.1",
            },
            {
                "created": 1443651141,
                "email": "bounce2@sg.example",
                "reason": "550 5.1.1 user unknown",
                "status": "5.1.1",
            },
            {"created": "last week", "email": "bounce3@sg.example", "reason": "", "status": "5.0.0"},
        ],
        indent=2,
    ),
    # Postmark, GET /message-streams/{stream_id}/suppressions/dump ("Suppression dump",
    # https://postmarkapp.com/developer/api/suppressions-api): {"Suppressions": [{EmailAddress,
    # SuppressionReason: HardBounce|SpamComplaint|ManualSuppression, Origin: Recipient|Customer|Admin,
    # CreatedAt}]}.
    "postmark-dump.json": json.dumps(
        {
            "Suppressions": [
                {
                    "EmailAddress": "address@pmd.example",
                    "SuppressionReason": "ManualSuppression",
                    "Origin": "Recipient",
                    "CreatedAt": "2019-12-17T08:58:33-05:00",
                },
                {
                    "EmailAddress": "bounce.address@pmd.example",
                    "SuppressionReason": "HardBounce",
                    "Origin": "Recipient",
                    "CreatedAt": "2019-12-17T08:58:33-05:00",
                },
                {
                    "EmailAddress": "added@pmd.example",
                    "SuppressionReason": "ManualSuppression",
                    "Origin": "Customer",
                    "CreatedAt": "2020-01-02T10:00:00-05:00",
                },
                {
                    "EmailAddress": "spam.complaint.address@pmd.example",
                    "SuppressionReason": "SpamComplaint",
                    "Origin": "Recipient",
                    "CreatedAt": "2019-12-17T08:58:33-05:00",
                },
            ]
        },
        indent=2,
    ),
    # Mailgun, GET /v3/{domain_name}/bounces ("List all bounces",
    # https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/bounces/get-v3--domainid--bounces):
    # {"items": [{address, code, error, created_at: RFC 822 date}], "paging": {first, last, next, previous}}.
    "mailgun-bounces.json": json.dumps(
        {
            "items": [
                {
                    "address": "alice@mga.example",
                    "code": "550",
                    "error": "No such mailbox",
                    "created_at": "Fri, 21 Oct 2011 11:02:55 UTC",
                },
                {
                    "address": "bob@mga.example",
                    "code": "550",
                    "error": "Mailbox disabled",
                    "created_at": "Sat, 22 Oct 2011 11:02:55 GMT",
                },
            ],
            "paging": {
                "first": "https://api.mailgun.net/v3/mga.example/bounces?limit=100",
                "last": "https://api.mailgun.net/v3/mga.example/bounces?page=last&limit=100",
                "next": "https://api.mailgun.net/v3/mga.example/bounces?page=next&limit=100",
                "previous": "https://api.mailgun.net/v3/mga.example/bounces?page=previous&limit=100",
            },
        },
        indent=2,
    ),
    # Amazon SES v2, ListSuppressedDestinations (https://docs.aws.amazon.com/ses/latest/APIReference-V2/
    # API_ListSuppressedDestinations.html, API_SuppressedDestinationSummary.html): EmailAddress, Reason
    # (BOUNCE | COMPLAINT), LastUpdateTime "in Unix time format" -- a number as the API and the AWS CLI v1
    # print it -- and NextToken when there are more pages.
    "ses-unix-time.json": json.dumps(
        {
            "SuppressedDestinationSummaries": [
                {"EmailAddress": "u1@ses.example", "Reason": "BOUNCE", "LastUpdateTime": 1588152433.813},
                {"EmailAddress": "u2@ses.example", "Reason": "COMPLAINT", "LastUpdateTime": 1588152500},
            ],
            "NextToken": "AQICAHhVc2VyVG9rZW4",
        },
        indent=2,
    ),
}
EXPECTED: dict[str, tuple[dict[str, tuple[str, str | None, str]], set[str], int]] = {
    "own.csv": (
        {
            "alice@example.org": ("disabled-bounces", "2026-01-02T03:04:05Z", "bounces"),
            "bob@example.org": ("disabled-user", "2026-01-03T00:00:00Z", "user"),
            "frank@example.org": ("disabled-admin", "2026-01-31T23:00:00Z", "admin"),
        },
        {":3: not an address: 'not-an-address'", ":5: unknown state 'frozen'", ":7: not a date: 'yesterday'"},
        1,  # dave: active in the file
    ),
    "mailgun.csv": (
        {
            "gone@mg.example": ("disabled-bounces", "2024-01-02T10:00:00Z", "bounces"),
            "old@mg.example": ("disabled-bounces", "2024-01-03T10:00:00Z", "bounces"),
        },
        {":3: no address"},
        0,
    ),
    "postmark.csv": (
        {
            "hb@pm.example": ("disabled-bounces", "2024-03-01T15:00:00Z", "Recipient"),
            "sc@pm.example": ("disabled-user", "2024-03-02T15:00:00Z", "Recipient"),
            "ms@pm.example": ("disabled-admin", "2024-03-03T15:00:00Z", "Customer"),
            # An unknown reason is only a reason: the row takes the default state.
            "xx@pm.example": ("disabled-bounces", "2024-03-03T15:00:00Z", "Recipient"),
        },
        set(),
        0,
    ),
    "sendgrid.csv": (
        {"sg1@sg.example": ("disabled-bounces", "2023-11-14T22:13:20Z", "bounces")},
        {":3: more fields than the header names"},
        0,
    ),
    "ses.json": (
        {
            "b@ses.example": ("disabled-bounces", "2024-05-01T00:00:00Z", "bounces"),
            "c@ses.example": ("disabled-user", "2024-05-02T00:00:00Z", "user"),
        },
        {":13: not an object", ":14: not an address: '@ses.example'"},
        0,
    ),
    "mailman-members.txt": (
        {
            "anne@list.example": ("disabled-bounces", None, "bounces"),
            "bart@list.example": ("disabled-bounces", None, "bounces"),
            "cora@list.example": ("disabled-bounces", None, "bounces"),
            "asa@list.example": ("disabled-bounces", None, "bounces"),
        },
        {":4: not an address: 'Nobody At All'"},
        0,
    ),
    "mailman-roster.json": (
        {
            # The address from `email`, never from `address` (a link to the address resource).
            "m1@list.example": ("disabled-bounces", None, "bounces"),
            "m2@list.example": ("disabled-user", None, "user"),
            "m5@list.example": ("disabled-admin", None, "admin"),
        },
        {
            ":36: unknown state 'sideways'",
            ":58: a Mailman member without delivery_status (it is in /members/ID/preferences: add it,"
            " or use `mailman members --nomail bybounces`)",
        },
        1,  # m3: enabled
    ),
    "sendgrid-bounces.json": (
        {
            "bounce1@sg.example": ("disabled-bounces", "2015-09-30T22:12:05Z", "bounces"),
            "bounce2@sg.example": ("disabled-bounces", "2015-09-30T22:12:21Z", "bounces"),
        },
        {":14: not a date: 'last week'"},
        0,
    ),
    "postmark-dump.json": (
        {
            # The recipient's own unsubscribe (Origin Recipient), not an admin's suppression.
            "address@pmd.example": ("disabled-user", "2019-12-17T13:58:33Z", "Recipient"),
            "added@pmd.example": ("disabled-admin", "2020-01-02T15:00:00Z", "Customer"),
            "bounce.address@pmd.example": ("disabled-bounces", "2019-12-17T13:58:33Z", "Recipient"),
            "spam.complaint.address@pmd.example": ("disabled-user", "2019-12-17T13:58:33Z", "Recipient"),
        },
        set(),
        0,
    ),
    "mailgun-bounces.json": (
        {
            "alice@mga.example": ("disabled-bounces", "2011-10-21T11:02:55Z", "bounces"),
            "bob@mga.example": ("disabled-bounces", "2011-10-22T11:02:55Z", "bounces"),
        },
        set(),
        0,
    ),
    "ses-unix-time.json": (
        {
            "u1@ses.example": ("disabled-bounces", "2020-04-29T09:27:13Z", "bounces"),
            "u2@ses.example": ("disabled-user", "2020-04-29T09:28:20Z", "user"),
        },
        set(),
        0,
    ),
}
FORMATS = {"mailman-members.txt": "mailman3", "mailman-roster.json": "mailman3"}


@pytest.mark.parametrize("name", sorted(FILES))
def test_import_each_format_twice_then_export(
    name: str, conf: str, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path = tmp_path / name
    path.write_text(FILES[name])
    want, bad, active = EXPECTED[name]
    fmt = ("--format", FORMATS[name]) if name in FORMATS else ()

    dry = imported(conf, capsys, path, "--dry-run", *fmt)
    assert (dry["imported"], dry["bad"], dry["active"]) == (len(want), len(bad), active)
    assert export(conf, capsys) == []  # a dry run changes nothing

    code, out, err = run(conf, capsys, "import", str(path), *fmt)
    assert code == (importer.EX_DATAERR if bad else 0)
    # The bad lines, one each (the log line the command ends with goes to stderr too).
    errors = [line.removeprefix(str(path)) for line in err.splitlines() if line.startswith(str(path))]
    assert sorted(errors) == sorted(bad)
    assert f"imported {len(want)}, unchanged 0" in out
    rows = export(conf, capsys)
    got = {r["address"]: (r["state"], r["since"], r["by"]) for r in rows}
    assert set(got) == set(want)
    for address, (state, since, by) in want.items():
        assert got[address][0] == state
        assert got[address][2] == by
        if since is not None:
            assert got[address][1] == since

    again = imported(conf, capsys, path, *fmt)
    assert (again["imported"], again["unchanged"], again["bad"]) == (0, len(want), len(bad))
    assert export(conf, capsys) == rows  # idempotent: nothing changed, not even a date

    # The audit trail: one `disabled` event per imported address, naming the file's line.
    code, out, _ = run(conf, capsys, "show", next(iter(want)), "--json")
    events = json.loads(out)["events"]
    assert [e["kind"] for e in events] == ["disabled"]
    assert events[0]["note"].startswith(f"imported from {path}:")


def test_import_never_overrides_a_state_already_held(
    conf: str, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    assert run(conf, capsys, "disable", "kept@example.org", "--by", "user")[0] == 0
    path = tmp_path / "list.csv"
    path.write_text(
        "email,state\nkept@example.org,disabled-admin\nnew@example.org,\nnew@example.org,disabled-user\n"
    )
    summary = imported(conf, capsys, path)
    assert (summary["imported"], summary["unchanged"], summary["duplicates"]) == (1, 1, 1)
    got = {r["address"]: r["state"] for r in export(conf, capsys)}
    # The user's own wish stays; the first line naming an address decides (the default state).
    assert got == {"kept@example.org": "disabled-user", "new@example.org": "disabled-bounces"}


def test_export_import_round_trip(
    conf: str, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, redis_db: RedisServer
) -> None:
    for address, by in (("a@x.example", "admin"), ("b@x.example", "user"), ("c@y.example", "admin")):
        assert run(conf, capsys, "disable", address, "--by", by)[0] == 0
    _code, csv_text, _ = run(conf, capsys, "export")
    before_json = export(conf, capsys)
    (tmp_path / "out.csv").write_text(csv_text)
    (tmp_path / "out.json").write_text(json.dumps(before_json))
    for name in ("out.csv", "out.json"):
        redis_db.client().flushall()
        summary = imported(conf, capsys, tmp_path / name)
        assert (summary["imported"], summary["bad"], summary["exit"]) == (3, 0, 0)
        assert export(conf, capsys) == before_json
        _, again, _ = run(conf, capsys, "export")
        assert again == csv_text
        assert next(iter(csv.DictReader(io.StringIO(again))))["address"] == "a@x.example"


def test_import_bad_file_and_bad_header(
    conf: str, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    code, _, err = run(conf, capsys, "import", str(tmp_path / "missing.csv"))
    assert code == 2
    assert "missing.csv" in err
    path = tmp_path / "x.csv"
    path.write_text("name,comment\nalice,hi\n")
    code, _, err = run(conf, capsys, "import", str(path))
    assert code == importer.EX_DATAERR
    assert err.startswith(f"{path}:1: no address column in the header")
    path = tmp_path / "huge.csv"  # a field over csv's limit (128 KiB): that line only
    path.write_text(
        "address,reason\nok@example.org,x\nbig@example.org," + "y" * 200_000 + "\nalso@example.org,z\n"
    )
    code, out, err = run(conf, capsys, "import", str(path))
    assert code == importer.EX_DATAERR
    assert f"{path}:3: not CSV: field larger than field limit" in err
    assert "imported 2," in out
    path = tmp_path / "x.json"
    path.write_text('{"a": [1,\n')
    code, _, err = run(conf, capsys, "import", str(path))
    assert code == importer.EX_DATAERR
    assert err.startswith(f"{path}:2: not JSON")


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2024-01-02T03:04:05Z", 1704164645.0),
        ("2024-01-02 03:04:05", 1704164645.0),
        ("2024-01-02T04:04:05+01:00", 1704164645.0),
        ("Tue, 02 Jan 2024 03:04:05 -0000", 1704164645.0),
        ("1704164645", 1704164645.0),
        ("1704164645000", 1704164645.0),
    ],
)
def test_parse_date(text: str, epoch: float) -> None:
    assert importer.parse_date(text) == epoch


def test_mailman_members_of_an_empty_roster_is_no_row(tmp_path: pathlib.Path) -> None:
    # mailman.commands.cli_members prints "$mlist.list_id has no members", not nothing, for an empty roster.
    path = tmp_path / "members.txt"
    path.write_text("ant.list.example has no members\n")
    assert list(importer.rows(path, "mailman3", State.DISABLED_BOUNCES)) == []
    # Anywhere else such a line is what it looks like: not an address.
    path.write_text("anne@list.example\nant.list.example has no members\n")
    got = list(importer.rows(path, "mailman3", State.DISABLED_BOUNCES))
    assert isinstance(got[1], importer.BadLine)
    assert str(got[1]).endswith(":2: not an address: 'ant.list.example has no members'")


def test_json_list_keys_compared_without_case(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "dump.json"
    for key in ("Suppressions", "suppressions", "ITEMS"):
        path.write_text(json.dumps({key: [{"EmailAddress": "a@x.example"}]}))
        got = list(importer.rows(path, "json", State.DISABLED_BOUNCES))
        assert [r.address for r in got if isinstance(r, importer.Row)] == ["a@x.example"]


def test_parse_state_words() -> None:
    d = State.DISABLED_ADMIN
    assert importer.parse_state("", d) is d
    assert importer.parse_state("Active", d) is None
    assert importer.parse_state("HardBounce", d) is State.DISABLED_BOUNCES
    assert importer.parse_state("by_user", d) is State.DISABLED_USER
    assert importer.parse_state("disabled-user", d) is State.DISABLED_USER
    with pytest.raises(ValueError, match="unknown state"):
        importer.parse_state("gone fishing", d)


@pytest.fixture(params=["single", "cluster"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    url = request.getfixturevalue("redis_db" if request.param == "single" else "redis_cluster").url
    s = Store.from_settings(RedisSettings(url=url))
    s._client.flushall()
    yield s
    s.close()


def _row(address: str, state: State = State.DISABLED_BOUNCES) -> Suppression:
    event = Event(at=1_700_000_000.0, kind=EventKind.DISABLED, source=Source.CLI, address=address, note="t")
    return Suppression(address=address, state=state, since=1_690_000_000.0, by="bounces", event=event)


def test_store_import_on_one_server_and_a_cluster(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [_row(f"user{n}@d{n % 7}.example") for n in range(40)]
    assert store.import_suppressions(rows) == [State.ACTIVE] * 40
    assert store.import_suppressions(rows) == [State.DISABLED_BOUNCES] * 40
    assert all(store.is_suppressed(r.address) for r in rows)
    assert [e["address"] for e in store.events_since(0)] == [r.address for r in rows]
    view = store.view(rows[0].address)
    assert (view.state, view.since, view.by) == (State.DISABLED_BOUNCES, 1_690_000_000.0, "bounces")
    assert [e["kind"] for e in view.events] == ["disabled"]
    # Another process disables an address between the read of the states and the script: its state
    # stays, and the import's event for it is taken back from the stream.
    store.admin(
        "late@x.example", "disable", _row("late@x.example").event, state=State.DISABLED_USER, by="user"
    )
    monkeypatch.setattr(store, "states", lambda addresses: [State.ACTIVE for _ in addresses])
    assert store.import_suppressions([_row("late@x.example"), _row("new@x.example")]) == [
        State.DISABLED_USER,
        State.ACTIVE,
    ]
    assert store.view("late@x.example").state is State.DISABLED_USER
    events = list(store.events_since(0))
    assert [e["address"] for e in events[40:]] == ["late@x.example", "new@x.example"]  # the admin's, ours


def test_progress_bar_on_a_terminal_only(conf: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("address\n" + "".join(f"p{n}@example.org\n" for n in range(60)))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "milter")}
    argv = [sys.executable, "-m", "bouncekeeper.cli", "--config", conf, "import", str(path), "--dry-run"]
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=secondary)
        os.close(secondary)  # read while it writes: a terminal's buffer is small
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the program closed the terminal and everything was read
                break
            if not chunk:
                break
            seen += chunk
        proc.wait(timeout=60)
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert b"] 60/60" in seen
    assert b"\r[" in seen
    piped = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    assert piped.returncode == 0
    assert b"60/60" not in piped.stderr  # not a terminal: no bar
    assert b"would import 60," in piped.stdout
