"""Bounces that real Postfix, Exim and Sendmail write for failures we cause, classified.

Each MTA relays one message per case of tests/support/bounce_cases.py to a scripted remote MX
(tests/support/remote_mx.py) that refuses the recipient at RCPT or at the end of DATA with the case's
reply; two more cases route to a host name that does not resolve and to a port where nothing listens.
Queue lifetimes are 6 s (room for a retry and its delay warning on a loaded machine), so the temporary
failures expire into bounces too, after a delay warning. The MTA writes every bounce itself and sends it
back to the original sender at the same MX; the test classifies what arrived. One MTA instance per MTA,
all cases in one batch.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from bouncekeeper.core.classify import classify
from bouncekeeper.core.model import Classification, Failure
from tests.support import exim, postfix, sendmail
from tests.support.bounce_cases import (
    CASES,
    EXPIRING,
    NOHOST,
    REFUSED,
    REPLIES,
    SENDER,
    Case,
    check_delay,
    check_failure,
)
from tests.support.remote_mx import Received, RemoteMx

pytestmark = [
    pytest.mark.mta,
    pytest.mark.skipif(os.geteuid() != 0, reason="the MTAs need root"),
]

# Set to a folder to keep every bounce the MTAs wrote (how tests/fixtures/mta/ was filled).
CAPTURE = os.environ.get("BK_CAPTURE_MTA_BOUNCES")


@dataclass
class Batch:
    """What one MTA sent back for the cases: per case its bounce and (for expiring ones) its warning."""

    mta: str
    bounces: dict[str, tuple[Classification, Failure, bytes]]
    delays: dict[str, tuple[Classification, Failure, bytes]]
    log: str


def _send_all(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for case in CASES:
            body = (
                f"From: {SENDER}\r\nTo: {case.recipient}\r\nSubject: case {case.name}\r\n"
                f"Message-ID: <{case.name}.{time.time_ns()}@sender.test>\r\n\r\nHello {case.name}.\r\n"
            )
            smtp.sendmail(case.sender, [case.recipient], body.encode())


def _collect(mta: str, mx: RemoteMx, log: Callable[[], str], timeout: float = 45.0) -> Batch:
    wanted = {case.name for case in CASES}
    warned = {case.name for case in CASES if case.expires}
    by_rcpt = {case.recipient: case.name for case in CASES}
    batch = Batch(mta, {}, {}, "")
    seen = 0
    deadline = time.monotonic() + timeout
    while (set(batch.bounces) != wanted or set(batch.delays) != warned) and time.monotonic() < deadline:
        received: list[Received] = mx.collected
        for message in received[seen:]:
            result = classify(message.raw, envelope_sender=message.sender)
            for failure in result.failures:
                if failure.recipient in by_rcpt:
                    batch.bounces[by_rcpt[failure.recipient]] = (result, failure, message.raw)
            for failure in result.delays:
                if failure.recipient in by_rcpt:
                    batch.delays[by_rcpt[failure.recipient]] = (result, failure, message.raw)
            if CAPTURE:
                path = pathlib.Path(CAPTURE) / mta
                path.mkdir(parents=True, exist_ok=True)
                (path / f"{seen:02d}.eml").write_bytes(message.raw)
            seen += 1
        time.sleep(0.2)
    batch.log = log()
    if CAPTURE:
        (pathlib.Path(CAPTURE) / f"{mta}.log").write_text(batch.log)
    return batch


@pytest.fixture(scope="module")
def postfix_batch() -> Iterator[Batch]:
    if not postfix.have_postfix():
        pytest.skip("needs Postfix (scripts/sysdeps.sh)")
    with tempfile.TemporaryDirectory(prefix="bk-real-pf-") as directory:
        d = pathlib.Path(directory)
        d.chmod(0o755)
        mx = RemoteMx(REPLIES, collect=SENDER)
        dead_port = postfix.free_port()
        instance = postfix.Postfix(
            d / "postfix",
            relay_port=mx.port,
            milter_socket=None,
            settings={
                # With DNS off Postfix resolves through the system resolver: *.invalid never resolves.
                "transport_maps": f"inline:{{ {NOHOST}=smtp:[no-such-host.invalid] "
                f"{REFUSED}=smtp:[127.0.0.1]:{dead_port} }}",
                "maximal_queue_lifetime": "6s",
                "bounce_queue_lifetime": "6s",
                "delay_warning_time": "1s",
            },
        )
        mx.start()
        try:
            instance.start()
            _send_all(instance.port)
            yield _collect("postfix", mx, instance.log)
        finally:
            instance.stop()
            mx.stop()


_EXIM_CONF = """\
exim_path = {binary}
spool_directory = {d}/spool
log_file_path = {d}/spool/log/%slog
pid_file_path = {d}/exim.pid
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
primary_hostname = mta.example.test
host_lookup =
tls_advertise_hosts =
acl_smtp_rcpt = accept
# Exim's delay warning: after 1 s in the queue (the default condition skips only list mail).
delay_warning = 1s
begin routers
nohost:
  driver = dnslookup
  domains = {nohost}
  transport = remote_smtp
  no_more
# Another address than the MX's: Exim keys host retry data and cached connections by IP, not port.
refused:
  driver = manualroute
  domains = {refused}
  route_list = * 127.0.0.2
  self = send
  transport = remote_smtp
everything:
  driver = manualroute
  route_list = * 127.0.0.1
  self = send
  transport = remote_smtp
begin transports
remote_smtp:
  driver = smtp
  port = ${{if eq{{$domain}}{{{refused}}}{{{dead_port}}}{{{mx_port}}}}}
  allow_localhost
begin retry
# Give up after 6 s of temporary failures, retrying every second.
* * F,6s,1s
"""


@pytest.fixture(scope="module")
def exim_batch() -> Iterator[Batch]:
    if shutil.which("smtp-sink") is None:
        pytest.skip("needs Postfix's tools and Exim (scripts/sysdeps.sh)")
    d = exim.scratch_dir("bk-real-exim-")
    try:
        binary = exim.exim_binary()
        spool = d / "spool"
        (spool / "log").mkdir(parents=True)
        for path in (spool, spool / "log"):
            shutil.chown(path, exim.EXIM_USER)
        mx = RemoteMx(REPLIES, collect=SENDER)
        port = exim.free_port()
        config = d / "exim.conf"
        config.write_text(
            _EXIM_CONF.format(
                binary=binary, d=d, port=port, nohost=NOHOST, refused=REFUSED,
                dead_port=exim.free_port(), mx_port=mx.port,
            )
        )  # fmt: skip
        mx.start()
        # -bdf: the daemon in the foreground (our child, stopped by its PID); -q1s: queue runs every second.
        proc = subprocess.Popen([str(binary), "-C", str(config), "-bdf", "-q1s"], stderr=subprocess.DEVNULL)
        try:
            exim.wait_for_port(port, proc=proc)
            _send_all(port)
            mainlog = spool / "log" / "mainlog"
            yield _collect(
                "exim", mx, lambda: mainlog.read_text(errors="replace") if mainlog.exists() else ""
            )
        finally:
            proc.terminate()
            proc.wait(10)
            mx.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def sendmail_batch() -> Iterator[Batch]:
    tree = sendmail.unpacked()
    if tree is None or shutil.which("m4") is None:
        pytest.skip("needs Sendmail unpacked (scripts/fetch-sendmail.sh) and m4")
    root: pathlib.Path = tree  # the narrowing, for the methods below

    class Instance(sendmail.Sendmail):
        """The harness's Sendmail without the milter, with tiny queue timeouts and a mailertable."""

        def timeouts_mc(self) -> str:
            # Warn after 1 s, return after 6 s (Timeout.queuewarn / Timeout.queuereturn).
            return "define(`confTO_QUEUEWARN', `1s')dnl\ndefine(`confTO_QUEUERETURN', `6s')dnl\n"

        def extra_mc(self) -> str:
            # No such host (the name does not resolve); a loopback address where nothing listens.
            (self.directory / "mailertable").write_text(
                f"{NOHOST} esmtp:[no-such-host.invalid]\n{REFUSED} esmtp:[127.0.0.2]\n"
            )
            return (
                f"FEATURE(`nocanonify')dnl\nFEATURE(`mailertable', `hash {self.directory}/mailertable')dnl\n"
            )

        def after_compile(self, cf: pathlib.Path) -> None:
            table = self.directory / "mailertable"
            with table.open("rb") as source:  # makemap reads the .cf (-C) for TrustedUser
                makemap = [str(root / "usr/sbin/makemap"), "-C", str(cf)]
                subprocess.run([*makemap, "hash", str(table)], stdin=source, check=True, timeout=30)

        def start(self) -> Instance:
            cf = self.configure()
            # As the harness starts it, plus -q1s: a queue run every second retries the deferred mail.
            argv = [
                "unshare", "--uts", "--", "sh", "-c", 'hostname mta.example.test && exec "$@"', "sh",
                str(root / "usr/libexec/sendmail/sendmail"), "-C", str(cf), "-bD", "-q1s",
                "-X", str(self.directory / "traffic.log"),
            ]  # fmt: skip
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=(self.directory / "stderr.log").open("wb")
            )
            postfix.wait_port(self.port, timeout=15)
            return self

    with tempfile.TemporaryDirectory(prefix="bk-real-sm-") as directory:
        d = pathlib.Path(directory)
        d.chmod(0o755)
        mx = RemoteMx(REPLIES, collect=SENDER)
        instance = Instance(d / "sendmail", tree, relay_port=mx.port, milter_socket="")
        instance.directory.mkdir()
        mx.start()
        try:
            instance.start()
            _send_all(instance.port)
            yield _collect("sendmail", mx, instance.traffic)
        finally:
            instance.stop()
            mx.stop()


BATCHES = ["postfix_batch", "exim_batch", "sendmail_batch"]


def _batch(request: pytest.FixtureRequest, name: str) -> Batch:
    batch = request.getfixturevalue(name)
    assert isinstance(batch, Batch)
    return batch


@pytest.mark.parametrize("mta", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_mta_bounce_names_the_recipient_kind_status_and_reason(
    request: pytest.FixtureRequest, mta: str, case: Case
) -> None:
    batch = _batch(request, mta)
    assert case.name in batch.bounces, (
        f"{batch.mta} sent no bounce read as a failure of {case.recipient}:\n{batch.log[-3000:]}"
    )
    result, failure, _raw = batch.bounces[case.name]
    check_failure(result, failure, case)


@pytest.mark.parametrize("mta", BATCHES)
@pytest.mark.parametrize("case", EXPIRING, ids=[c.name for c in EXPIRING])
def test_the_delay_warning_is_a_delay_not_a_failure(
    request: pytest.FixtureRequest, mta: str, case: Case
) -> None:
    batch = _batch(request, mta)
    assert case.name in batch.delays, f"{batch.mta} sent no delay warning for {case.recipient}"
    result, failure, _raw = batch.delays[case.name]
    check_delay(result, failure, case)
