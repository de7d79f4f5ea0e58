"""SIGHUP to the milter under traffic through a real Postfix: no session fails, and the keys are rotated.

The milter starts with one key. While three SMTP sessions keep submitting mail, a second key is put first
in `[verp] secret_files` and the milter gets SIGHUP (what `systemctl reload bouncekeeper-milter` sends).
Afterwards: every message was accepted and reached the MX, the daemon is the same process, new mail is
signed with the new key, a bounce to an address of the new key is recorded where it was refused before,
and the old key still verifies the addresses it signed.
"""

from __future__ import annotations

import os
import pathlib
import signal
import smtplib
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from bouncekeeper.core import verp
from tests.support.milter import MilterProcess
from tests.support.mta_config import APP, BOUNCE_DOMAIN, settings_head
from tests.support.postfix import Postfix, SmtpSink, have_postfix
from tests.support.postfix_mta import PostfixMta, message, started
from tests.support.redis_server import RedisServer

pytestmark = [
    pytest.mark.mta,
    pytest.mark.slow,
    pytest.mark.skipif(not have_postfix(), reason="needs root and Postfix (scripts/sysdeps.sh)"),
]

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures" / "milter"
OLD_KEY = b"reload-test-old-key-0123456789abcdef"
NEW_KEY = b"reload-test-new-key-fedcba9876543210"


def _toml(redis: RedisServer, keys: list[pathlib.Path]) -> str:
    return (
        settings_head(redis.url, keys, level="INFO")
        + """[milter]
originating_networks = []
"""
    )


@pytest.fixture(scope="module")
def mta() -> Iterator[tuple[PostfixMta, pathlib.Path, pathlib.Path, RedisServer]]:
    with tempfile.TemporaryDirectory(prefix="bk-pfh-") as tmp:
        d = pathlib.Path(tmp)
        d.chmod(0o755)
        redis = RedisServer(d / "redis")
        redis.start()
        old, new = d / "old.key", d / "new.key"
        old.write_bytes(OLD_KEY + b"\n")
        new.write_bytes(NEW_KEY + b"\n")
        milter = MilterProcess(d, f"unix:{d}/milter.sock", _toml(redis, [old]), "reload")
        sink = SmtpSink(d / "sink")
        dead = SmtpSink(d / "dead", reject="RCPT")
        postfix = Postfix(
            d / "postfix",
            relay_port=0,
            milter_socket=f"unix:{d}/milter.sock",
            listeners={"submission": {"milter_macro_daemon_name": "ORIGINATING"}},
        )
        try:
            with started(postfix, sink, dead, BOUNCE_DOMAIN, milter) as (settings, signer):
                yield PostfixMta(postfix, sink, redis, settings, signer, milter), old, new, redis
        finally:
            redis.stop()


def _address(secret: bytes, rcpt: str) -> str:
    keyring = verp.Keyring.from_secrets([secret])
    return verp.encode(rcpt, keyring=keyring, bounce_domain=BOUNCE_DOMAIN, day=int(time.time() // 86400))


def _subject(text: str) -> str:
    return next((line[9:] for line in text.splitlines() if line.startswith("Subject: ")), "")


def _traffic(mta: PostfixMta, stop: threading.Event, sent: list[str], failures: list[BaseException]) -> None:
    """SMTP sessions of 5 messages each, one after the other, until told to stop (so that sessions are
    open across the reload and others begin after it); any failure is kept for the test."""
    try:
        while not stop.is_set():
            with smtplib.SMTP("127.0.0.1", mta.postfix.ports["submission"], timeout=30) as smtp:
                for _ in range(5):
                    subject = f"h-{threading.get_ident()}-{len(sent)}"
                    refused = smtp.sendmail(APP, [f"r{len(sent)}@example.net"], message(subject))
                    if refused:
                        raise AssertionError(f"refused: {refused}")
                    sent.append(subject)
    except BaseException as exc:  # noqa: BLE001 - reported by the test, whatever it is
        failures.append(exc)


def test_sighup_under_traffic_fails_no_session_and_a_new_key_verifies(
    mta: tuple[PostfixMta, pathlib.Path, pathlib.Path, RedisServer],
) -> None:
    pf, old, new, redis = mta
    pf.reset()
    new_id, old_id = verp.key_id_of(NEW_KEY), verp.key_id_of(OLD_KEY)
    fresh = _address(NEW_KEY, "hank@example.net")
    bounce = (FIXTURES / "gmail-userunknown.eml").read_bytes()
    with pytest.raises(smtplib.SMTPRecipientsRefused):  # an unknown key: forged, refused in enforce mode
        pf.send("smtp", "", [fresh], bounce)

    stop = threading.Event()
    sent: list[list[str]] = [[], [], []]
    failures: list[BaseException] = []
    threads = [threading.Thread(target=_traffic, args=(pf, stop, s, failures)) for s in sent]
    for thread in threads:
        thread.start()
    while sum(map(len, sent)) < 15 and not failures:
        time.sleep(0.05)
    # Rotation: the new key signs, the old one still verifies what it signed.
    pf.milter.config.write_text(_toml(redis, [new, old]))
    os.kill(pf.milter.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "SIGHUP: configuration and keys re-read" not in pf.milter.log():
        assert time.monotonic() < deadline, pf.milter.log()[-3000:]
        time.sleep(0.05)
    before = sum(map(len, sent))
    while sum(map(len, sent)) < before + 30 and not failures:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    assert not failures, failures
    assert pf.milter.proc is not None
    assert pf.milter.proc.poll() is None, "the same daemon, still running"
    subjects = {s for session in sent for s in session}
    deadline = time.monotonic() + 60
    while missing := subjects - {_subject(m.text) for m in pf.sink.messages()}:
        assert time.monotonic() < deadline, f"{len(missing)} of {len(subjects)} never arrived"
        time.sleep(0.2)
    both = verp.Keyring.from_secrets([NEW_KEY, OLD_KEY])
    today = int(time.time() // 86400)
    decoded = [
        verp.decode(m.sender, keyring=both, bounce_domain=BOUNCE_DOMAIN, today=today, max_age_days=14)
        for m in pf.sink.messages()
    ]
    assert all(d.status == verp.VerpStatus.VALID for d in decoded)
    keys_used = {d.key_id for d in decoded}
    assert {old_id, new_id} <= keys_used, "signed with the old key before the reload, the new one after"
    assert "tempfail" not in pf.milter.log().lower()

    # The new key verifies now, and the old key's addresses still do.
    pf.send("smtp", "", [fresh], bounce)
    assert pf.wait_events("hank@example.net", bool)[0]["kind"] == "permanent"
    pf.send("smtp", "", [_address(OLD_KEY, "ivan@example.net")], bounce)
    assert pf.wait_events("ivan@example.net", bool)[0]["kind"] == "permanent"


def test_sighup_with_a_broken_file_keeps_the_running_configuration(
    mta: tuple[PostfixMta, pathlib.Path, pathlib.Path, RedisServer],
) -> None:
    pf, old, _new, redis = mta
    pf.reset()
    pf.milter.config.write_text(_toml(redis, [old]).replace("[verp]", "[verp", 1))
    os.kill(pf.milter.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "SIGHUP: configuration error, the running configuration stays" not in pf.milter.log():
        assert time.monotonic() < deadline, pf.milter.log()[-3000:]
        time.sleep(0.05)
    assert pf.milter.proc is not None
    assert pf.milter.proc.poll() is None
    pf.send("submission", APP, ["after-broken@example.net"], message("h-broken"))
    arrived = pf.sink.wait_for(lambda m: "Subject: h-broken" in m.text)
    assert arrived.sender.startswith("bounces+after-broken=example.net+")
    pf.milter.config.write_text(_toml(redis, [old]))
