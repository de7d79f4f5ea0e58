"""The operator's commands (`bouncekeeper show|list|enable|disable|reset|stats|export|record`), run through
cli.main against a real redis-server."""

from __future__ import annotations

import csv
import io
import json
import mailbox
import pathlib
import re

import pytest

from bouncekeeper import cli
from bouncekeeper.service import admin
from tests.support.redis_server import RedisServer


@pytest.fixture
def conf(redis_db: RedisServer, tmp_path: pathlib.Path) -> str:
    path = tmp_path / "bk.toml"
    # Bounces from files without a VERP address: these tests opt in to scoring them.
    policy = 'mode = "enforce"\nhard_threshold = 2\nrequire_verp = false\n'
    path.write_text(f'[redis]\nurl = "{redis_db.url}"\n[policy]\n{policy}')
    return str(path)


def run(conf: str, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["--config", conf, *argv])
    return code, capsys.readouterr().out


def run_json(conf: str, capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code, out = run(conf, capsys, *argv, "--json")
    assert code == 0, out
    return json.loads(out)


def test_record_then_show(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        conf,
        capsys,
        "record",
        "Alice@Example.org",
        "--code",
        "550",
        "--status",
        "5.1.1",
        "--text",
        "no such user",
    )
    assert code == 0
    assert (
        out.strip()
        == "bounce recorded rcpt=alice@example.org kind=permanent status=5.1.1 reason=userunknown score=1/2"
    )
    shown = run_json(conf, capsys, "show", "alice@example.org")
    assert isinstance(shown, dict)
    assert shown["address"] == "alice@example.org"
    assert shown["state"] == "active"
    assert shown["hard_score"] == 1
    assert shown["soft_count"] == 0
    assert 6 * 86_400 < shown["hard_resets_in"] <= 7 * 86_400
    assert [e["source"] for e in shown["events"]] == ["smtp-time"]
    code, text = run(conf, capsys, "show", "alice@example.org")
    assert "hard score 1/2" in text
    assert re.search(r"resets in (6d 23h|7d 0h) unless it rises", text)


def test_show_says_when_the_stream_no_longer_has_an_events_details(
    conf: str, capsys: pytest.CaptureFixture[str], redis_db: RedisServer
) -> None:
    run(conf, capsys, "record", "bob@example.org", "--code", "550", "--status", "5.1.1", "--text", "gone")
    code, text = run(conf, capsys, "show", "bob@example.org")
    assert "diag='smtp; 550 gone'" in text
    assert "trimmed" not in text
    redis_db.client().xtrim("bk:events", maxlen=0)
    code, text = run(conf, capsys, "show", "bob@example.org")
    assert code == 0
    assert "permanent 5.1.1 userunknown" in text
    assert "(details trimmed from the stream)" in text
    assert "diag=" not in text


def test_record_a_non_address_failure_is_not_scored(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(conf, capsys, "record", "a@example.org", "--code", "554", "--text", "rejected as spam")
    assert isinstance(out, dict)
    assert out["recorded"][0]["scored"] is False
    assert out["recorded"][0]["reason"] == "spamdetected"


def test_record_rejects_bad_input(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(conf, capsys, "record", "nobody", "--code", "550")[0] == admin.EX_USAGE
    assert run(conf, capsys, "record", "a@example.org", "--code", "250")[0] == admin.EX_USAGE


def test_disable_list_export_enable(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(conf, capsys, "record", "a@example.org", "--code", "452", "--text", "mailbox full")
    out = run_json(conf, capsys, "disable", "b@example.org", "--by", "user")
    assert out == {
        "address": "b@example.org",
        "action": "disable",
        "previous": "active",
        "state": "disabled-user",
    }
    run(conf, capsys, "disable", "c@other.example")
    listed = run_json(conf, capsys, "list")
    assert isinstance(listed, list)
    assert [(r["address"], r["state"]) for r in listed] == [
        ("a@example.org", "active"),
        ("b@example.org", "disabled-user"),
        ("c@other.example", "disabled-admin"),
    ]
    by_domain = run_json(conf, capsys, "list", "--domain", "Example.org", "--state", "disabled-user")
    assert isinstance(by_domain, list)
    assert [r["address"] for r in by_domain] == ["b@example.org"]
    _, text = run(conf, capsys, "export")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["address"], r["state"], r["by"]) for r in rows] == [
        ("b@example.org", "disabled-user", "user"),
        ("c@other.example", "disabled-admin", "admin"),
    ]
    out = run_json(conf, capsys, "enable", "b@example.org", "--note", "user asked")
    assert isinstance(out, dict)
    assert out["state"] == "active"
    exported = run_json(conf, capsys, "export")
    assert isinstance(exported, list)
    assert exported == [
        {
            "address": "c@other.example",
            "state": "disabled-admin",
            "since": exported[0]["since"],
            "by": "admin",
        }
    ]
    shown = run_json(conf, capsys, "show", "b@example.org")
    assert isinstance(shown, dict)
    assert [e["kind"] for e in shown["events"]] == ["enabled", "disabled"]
    assert shown["events"][0]["note"] == "user asked"


def test_reset_clears_counters_and_keeps_state(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(conf, capsys, "record", "a@example.org", "--code", "550", "--status", "5.1.1")
    run(conf, capsys, "disable", "a@example.org")
    out = run_json(conf, capsys, "reset", "a@example.org")
    assert isinstance(out, dict)
    assert out["state"] == "disabled-admin"
    shown = run_json(conf, capsys, "show", "a@example.org")
    assert isinstance(shown, dict)
    assert (shown["hard_score"], shown["state"]) == (0, "disabled-admin")


def test_stats(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(conf, capsys, "record", "a@example.org", "--code", "550", "--status", "5.1.1")
    run(conf, capsys, "disable", "b@example.org")
    out = run_json(conf, capsys, "stats")
    assert isinstance(out, dict)
    assert out["tracked_addresses"] == 2
    assert out["states"] == {"active": 1, "disabled-admin": 1}
    assert out["counters"]["events:permanent"] == 1


def test_store_down_exits_tempfail(
    conf: str, capsys: pytest.CaptureFixture[str], redis_db: RedisServer
) -> None:
    redis_db.stop()
    assert run(conf, capsys, "show", "a@example.org")[0] == admin.EX_TEMPFAIL


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_for_large_inputs() -> None:
    tty = Tty()
    bar = admin.Progress(100, tty)
    for _ in range(100):
        bar.step()
    assert tty.getvalue().endswith("] 100/100\n")
    quiet = io.StringIO()
    bar = admin.Progress(100, quiet)
    bar.step()
    assert quiet.getvalue() == ""
    small = Tty()
    admin.Progress(3, small).step()
    assert small.getvalue() == ""


def test_messages_reads_files_mbox_and_maildir(tmp_path: pathlib.Path) -> None:
    one = tmp_path / "one.eml"
    one.write_bytes(b"Subject: one\n\nbody\n")
    box = mailbox.mbox(tmp_path / "box.mbox")
    for n in range(3):
        box.add(f"From: x@y\nSubject: m{n}\n\nbody {n}\n".encode())
    box.flush()
    maildir = mailbox.Maildir(tmp_path / "md")
    maildir.add(b"Subject: md\n\nbody\n")
    paths = [str(one), str(tmp_path / "box.mbox"), str(tmp_path / "md")]
    got = list(admin.messages(paths))
    assert admin.count_messages(paths) == len(got) == 5
    assert [
        b"Subject: " + s.encode() in raw
        for s, (_, raw) in zip(["one", "m0", "m1", "m2", "md"], got, strict=True)
    ] == [True] * 5


# A minimal RFC 3464 DSN written for these tests (not from the corpus).
DSN = b"""From: Mail Delivery System <MAILER-DAEMON@mx.example.org>
To: bounces@bounce.example.net
Subject: Undelivered Mail Returned to Sender
Message-ID: <MSGID@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; carol@example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <carol@example.org>: Recipient address rejected: User unknown

--B
Content-Type: message/rfc822

From: app@example.net
To: carol@example.org
Message-ID: <orig-1@example.net>
Subject: hello

hi
--B--
"""


def test_ingest_a_maildir_and_an_mbox_counts_each_bounce_once(
    conf: str, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    maildir = mailbox.Maildir(tmp_path / "md")
    maildir.add(DSN.replace(b"MSGID", b"one"))
    maildir.add(DSN.replace(b"MSGID", b"one"))  # the same bounce delivered twice
    box = mailbox.mbox(tmp_path / "box")
    box.add(DSN.replace(b"MSGID", b"two").replace(b"carol", b"dave"))
    box.add(b"From: friend@example.org\nSubject: hi\n\nnot a bounce\n")
    box.flush()
    out = run_json(conf, capsys, "ingest", str(tmp_path / "md"), str(tmp_path / "box"))
    assert isinstance(out, dict)
    assert out["totals"]["messages"] == 4
    assert out["totals"]["duplicates"] == 1
    assert out["totals"]["recorded:permanent"] == 2
    shown = run_json(conf, capsys, "show", "carol@example.org")
    assert isinstance(shown, dict)
    assert shown["hard_score"] == 1
    (event,) = shown["events"]
    assert (event["status"], event["reason"], event["message_id"]) == (
        "5.1.1",
        "userunknown",
        "<orig-1@example.net>",
    )
    assert "User unknown" in event["diagnostic"]


def test_ingest_reports_a_missing_file(
    conf: str, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    assert run(conf, capsys, "ingest", str(tmp_path / "nope"))[0] == admin.EX_USAGE
