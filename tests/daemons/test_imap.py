"""The IMAP scanner against a real Dovecot on loopback, with a throwaway mailbox."""

from __future__ import annotations

import imaplib
import io
import pathlib
import time
from collections.abc import Iterator, Sequence

import pytest

from bouncekeeper import cli, config
from bouncekeeper.core import verp
from bouncekeeper.daemons import imap
from bouncekeeper.service.bounces import Service
from bouncekeeper.store import Store
from tests.support.dovecot import Dovecot
from tests.support.dsn import postfix_dsn
from tests.support.redis_server import RedisServer

PREFIX = "bk:"


def options(dovecot: Dovecot, *, tls: str = "none", folder: str = "INBOX") -> imap.Options:
    port = dovecot.imaps_port if tls == "tls" else dovecot.imap_port
    return imap.Options(
        server="127.0.0.1",
        port=port,
        tls=tls,
        user=dovecot.user,
        password=dovecot.password,
        folder=folder,
        backup_folder="FoundBounces",
        ca_file=str(dovecot.cert),
    )


@pytest.fixture
def mailbox(dovecot: Dovecot) -> Iterator[imaplib.IMAP4]:
    """A fresh, empty INBOX and no backup folder; the connection the test uses to look."""
    conn = imap.connect(options(dovecot))
    for name in ("FoundBounces", "Bounces In"):
        conn.delete(imap.quote(name))
    _, count = conn.select("INBOX")
    assert count[0] is not None
    if int(count[0]):
        conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
        conn.expunge()
    yield conn
    conn.logout()


@pytest.fixture
def store(redis_db: RedisServer) -> Iterator[Store]:
    s = Store(redis_db.client(), config.RedisSettings(prefix=PREFIX))
    yield s
    s.close()


def message(n: int, *, bounce: bool) -> bytes:
    if bounce:
        return (
            f"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces+u{n}=example.org+x@b.example\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <b{n}@mx.example.net>\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
            f"--B\r\n\r\nno\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Final-Recipient: rfc822; u{n}@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--B--\r\n"
        ).encode()
    return f"From: someone@example.org\r\nTo: bounces@b.example\r\nSubject: hello {n}\r\n\r\nHi.\r\n".encode()


def append(conn: imaplib.IMAP4, raw: bytes, folder: str = "INBOX") -> None:
    typ, data = conn.append(imap.quote(folder), "", None, raw)
    assert typ == "OK", data


def subjects(conn: imaplib.IMAP4, folder: str) -> list[str]:
    typ, _ = conn.select(imap.quote(folder), readonly=True)
    if typ != "OK":
        return []
    _, found = conn.search(None, "ALL")
    out = []
    for num in found[0].split():
        _, data = conn.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert isinstance(data[0], tuple)
        out.append(data[0][1].decode().strip().removeprefix("Subject: "))
    return sorted(out)


class Recorder:
    """Stands in for Service.process_bounce here (the Service itself is tested end to end below)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[bytes, Sequence[str]]] = []
        self.fail_after = fail_after

    def __call__(self, raw: bytes, candidates: Sequence[str]) -> imap.Handled:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("interrupted")
        self.calls.append((raw, candidates))
        is_bounce = b"multipart/report" in raw
        return imap.Handled(is_bounce, "bounce" if is_bounce else "not a bounce")


def test_bounces_are_moved_and_other_mail_stays(
    dovecot: Dovecot, mailbox: imaplib.IMAP4, store: Store
) -> None:
    for n in range(3):
        append(mailbox, message(n, bounce=True))
        append(mailbox, message(n, bounce=False))
    recorder = Recorder()
    report = imap.run(options(dovecot), store=store, process=recorder)
    assert (report.seen, report.bounces, report.left) == (6, 3, 3)
    assert subjects(mailbox, "INBOX") == ["hello 0", "hello 1", "hello 2"]
    assert subjects(mailbox, "FoundBounces") == ["Undelivered Mail Returned to Sender"] * 3
    # The VERP address of the bounce reached the service.
    assert "bounces+u0=example.org+x@b.example" in recorder.calls[0][1]
    # Left mail is not marked read by the scan (BODY.PEEK).
    mailbox.select("INBOX", readonly=True)
    _, unseen = mailbox.search(None, "UNSEEN")
    assert len(unseen[0].split()) == 3


def test_a_second_run_reads_only_new_mail(dovecot: Dovecot, mailbox: imaplib.IMAP4, store: Store) -> None:
    append(mailbox, message(1, bounce=False))
    append(mailbox, message(2, bounce=True))
    first = Recorder()
    imap.run(options(dovecot), store=store, process=first)
    assert len(first.calls) == 2
    again = Recorder()
    report = imap.run(options(dovecot), store=store, process=again)
    assert again.calls == []  # nothing re-read: no double counting from the scanner
    assert report.seen == 0
    append(mailbox, message(3, bounce=True))
    third = Recorder()
    imap.run(options(dovecot), store=store, process=third)
    assert len(third.calls) == 1


def test_an_interrupted_run_resumes_where_it_stopped(
    dovecot: Dovecot, mailbox: imaplib.IMAP4, store: Store
) -> None:
    for n in range(5):
        append(mailbox, message(n, bounce=True))
    broken = Recorder(fail_after=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        imap.run(options(dovecot), store=store, process=broken)
    assert len(subjects(mailbox, "FoundBounces")) == 2
    resumed = Recorder()
    report = imap.run(options(dovecot), store=store, process=resumed)
    assert report.seen == 3  # the three it had not finished, not the two it had
    assert len(subjects(mailbox, "FoundBounces")) == 5
    assert subjects(mailbox, "INBOX") == []


def test_overlapping_runs_are_refused(dovecot: Dovecot, mailbox: imaplib.IMAP4, store: Store) -> None:
    held = imap.folder_cursor(store, "127.0.0.1", dovecot.user, "INBOX")
    held.acquire()
    try:
        with pytest.raises(imap.Busy):
            imap.run(options(dovecot), store=store, process=Recorder())
    finally:
        held.release()
    imap.run(options(dovecot), store=store, process=Recorder())  # free again


def test_tls_with_a_self_signed_certificate(dovecot: Dovecot, mailbox: imaplib.IMAP4, store: Store) -> None:
    append(mailbox, message(7, bounce=True))
    report = imap.run(options(dovecot, tls="tls"), store=store, process=Recorder())
    assert report.bounces == 1
    # And STARTTLS on the plain port.
    append(mailbox, message(8, bounce=True))
    report = imap.run(options(dovecot, tls="starttls"), store=store, process=Recorder())
    assert report.bounces == 1


def test_tls_refuses_an_untrusted_certificate(dovecot: Dovecot) -> None:
    untrusted = options(dovecot, tls="tls")
    untrusted = imap.Options(**{**untrusted.__dict__, "ca_file": ""})
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        imap.connect(untrusted)


def test_folder_names_with_spaces_and_progress_bar(
    dovecot: Dovecot, mailbox: imaplib.IMAP4, store: Store
) -> None:
    mailbox.create(imap.quote("Bounces In"))
    for n in range(4):
        append(mailbox, message(n, bounce=n % 2 == 0), folder="Bounces In")
    out = io.StringIO()
    opts = options(dovecot, folder="Bounces In")
    conn = imap.connect(opts)
    try:
        cursor = imap.folder_cursor(store, "127.0.0.1", dovecot.user, "Bounces In")
        job = imap.ScanJob("Bounces In", "FoundBounces", Recorder(), progress_out=out)
        report = imap.scan(conn, cursor, job)
    finally:
        conn.logout()
    assert report.bounces == 2
    assert "4/4 bounces=2" in out.getvalue()


def test_new_uidvalidity_starts_over(dovecot: Dovecot, mailbox: imaplib.IMAP4, store: Store) -> None:
    append(mailbox, message(1, bounce=False))
    imap.run(options(dovecot), store=store, process=Recorder())
    cursor = imap.folder_cursor(store, "127.0.0.1", dovecot.user, "INBOX")
    validity, last = cursor.load()
    cursor.save(validity + 1, last)  # as if the folder had been recreated
    again = Recorder()
    imap.run(options(dovecot), store=store, process=again)
    assert len(again.calls) == 1


# --- end to end with the real service, classifier and store -------------------------------------------

KEY = b"0123456789abcdef0123456789abcdef"
DOMAIN = "bounce.example.net"


def verp_address(rcpt: str) -> str:
    keyring = verp.Keyring.from_secrets([KEY])
    return verp.encode(rcpt, keyring=keyring, bounce_domain=DOMAIN, day=int(time.time() // 86400))


def write_config(tmp_path: pathlib.Path, dovecot: Dovecot, redis_url: str) -> pathlib.Path:
    (tmp_path / "verp.key").write_bytes(KEY)
    (tmp_path / "imap.pw").write_text(dovecot.password + "\n")
    conf = tmp_path / "bk.toml"
    conf.write_text(
        f'[verp]\nbounce_domain = "{DOMAIN}"\nsecret_files = ["{tmp_path / "verp.key"}"]\n'
        f'[redis]\nurl = "{redis_url}"\nprefix = "{PREFIX}"\n'
        '[policy]\nmode = "enforce"\nbreaker_addresses = 0\n'
        f'[imap]\nserver = "127.0.0.1"\nport = {dovecot.imaps_port}\nuser = "{dovecot.user}"\n'
        f'password_file = "{tmp_path / "imap.pw"}"\nca_file = "{dovecot.cert}"\n'
    )
    return conf


def test_no_double_counting_when_interrupted_between_record_and_move(
    tmp_path: pathlib.Path,
    dovecot: Dovecot,
    mailbox: imaplib.IMAP4,
    redis_db: RedisServer,
    store: Store,
) -> None:
    settings = config.load(write_config(tmp_path, dovecot, redis_db.url))
    for n, rcpt in enumerate(["una@example.org", "vic@example.org"]):
        append(mailbox, postfix_dsn(rcpt, to=verp_address(rcpt), n=n))
    append(mailbox, message(9, bounce=False))
    service = Service.open(settings)
    try:
        real = imap.service_process(service, settings.verp.local_prefix)
        calls: list[str] = []

        def crash_after_second_record(raw: bytes, candidates: Sequence[str]) -> imap.Handled:
            handled = real(raw, candidates)
            calls.append(handled.summary)
            if len(calls) == 2:
                raise KeyboardInterrupt  # killed after the store wrote, before the move
            return handled

        opts = options(dovecot)
        with pytest.raises(KeyboardInterrupt):
            imap.run(opts, store=service.store, process=crash_after_second_record)
        report = imap.run(opts, store=service.store, process=real)
        assert (report.seen, report.bounces, report.left) == (2, 1, 1)  # vic's again, and the plain mail
        for rcpt in ("una@example.org", "vic@example.org"):
            view = service.store.view(rcpt)
            assert view.hard_score == 1, rcpt  # counted once
            assert len(view.events) == 1, rcpt
        assert "rcpt=una@example.org kind=permanent status=5.1.1 reason=userunknown" in calls[0]
    finally:
        service.close()
    assert len(subjects(mailbox, "FoundBounces")) == 2
    assert subjects(mailbox, "INBOX") == ["hello 9"]


def test_imap_command_runs_from_cron(
    tmp_path: pathlib.Path, dovecot: Dovecot, mailbox: imaplib.IMAP4, redis_db: RedisServer
) -> None:
    conf = write_config(tmp_path, dovecot, redis_db.url)
    append(mailbox, postfix_dsn("walt@example.org", to=verp_address("walt@example.org")))
    assert cli.main(["--config", str(conf), "imap", "--backup-folder", "Bounces In"]) == 0
    assert subjects(mailbox, "Bounces In") == ["Undelivered Mail Returned to Sender"]
    assert cli.main(["--config", str(conf), "imap"]) == 0  # nothing new: a no-op
    # Wrong password: a clean failure cron can retry (75), nothing half done.
    (tmp_path / "imap.pw").write_text("wrong\n")
    assert cli.main(["--config", str(conf), "imap"]) == 75


def test_the_envelope_address_is_decoded_once_and_a_forged_one_recorded_as_forged(
    tmp_path: pathlib.Path, redis_db: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config.Settings(
        verp=config.VerpSettings(bounce_domain=DOMAIN),
        redis=config.RedisSettings(url=redis_db.url, prefix=PREFIX),
    )
    service = Service(settings, Store.from_settings(settings.redis), keyring=verp.Keyring.from_secrets([KEY]))
    decoded: list[str] = []
    check_rcpt = service.check_rcpt

    def counting(address: str) -> verp.VerpResult:
        decoded.append(address)
        return check_rcpt(address)

    monkeypatch.setattr(service, "check_rcpt", counting)
    process = imap.service_process(service, settings.verp.local_prefix)
    try:
        valid = verp_address("xena@example.org")
        forged = valid.replace("xena", "xana")
        handled = process(postfix_dsn("xena@example.org", to=valid, n=1), [forged, valid])
        assert decoded == [forged, valid]  # each candidate once, the picked one not again
        assert handled.is_bounce
        assert service.store.view("xena@example.org").hard_score == 1
        decoded.clear()
        handled = process(postfix_dsn("xana@example.org", to=forged, n=2), [forged])
        assert decoded == [forged]
        assert not handled.is_bounce
        assert "forged bounce recorded" in handled.summary
    finally:
        service.close()
