"""A Postfix the way an operator has it before bouncekeeper (another milter, a submission service with its
own options, recipient restrictions, local mailboxes, a transport table), then bouncekeeper deployed on it
by the commands docs/postfix.md shows, read from that file: the docs are what the tests run.

Used by the deployment rehearsal (tests/mta/test_postfix_setup.py) and the fault test
(tests/mta/test_postfix_faults.py).
"""

from __future__ import annotations

import contextlib
import pathlib
import shlex
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from bouncekeeper import config, verpkeys
from tests.support import docs
from tests.support.header_milter import HeaderMilter
from tests.support.lifecycle import running
from tests.support.lmtp import ListenerProcess
from tests.support.milter import MilterProcess
from tests.support.mta_config import FAST_FAILING, settings_head
from tests.support.postfix import ROOT, Postfix, SmtpSink, free_port
from tests.support.postfix_mta import PostfixMta
from tests.support.redis_server import RedisServer

DOCS = ROOT / "docs" / "postfix.md"
PROTECTED = "app-in@example.org"  # the application's own inbound address (the loop guard's)
PERSON = "alice@example.org"  # a person with a mailbox on this host, who also sends mail through it
OTHER_HEADER = "X-Other-Milter"  # what the operator's own milter (standing for OpenDKIM) adds
# The paths of docs/postfix.md's commands, and what they become in the sandbox.
DOCS_CONFIG = "/etc/bouncekeeper/bouncekeeper.toml"

# The operator's Postfix before bouncekeeper: what the installer must keep.
SUBMISSION = {
    "syslog_name": "postfix/submission",
    "smtpd_tls_security_level": "none",
    "smtpd_client_restrictions": "permit_mynetworks,reject",
    "milter_macro_daemon_name": "ORIGINATING",
}
RESTRICTIONS = (
    "reject_non_fqdn_recipient, reject_unlisted_recipient, permit_mynetworks, reject_unauth_destination"
)
VIRTUAL_SERVICE = "virtual   unix  -       n       n       -       -       virtual\n"


@dataclass
class Deployment(PostfixMta):
    directory: pathlib.Path
    toml: pathlib.Path
    dead: SmtpSink  # a remote MX that refuses every recipient: Postfix writes its own bounce
    lmtp: ListenerProcess
    other: HeaderMilter

    @property
    def etc(self) -> pathlib.Path:
        return self.postfix.etc

    def run_documented(
        self, heading: str, paths: Mapping[str, str] | None = None
    ) -> list[subprocess.CompletedProcess[str]]:
        """Every command of the heading's block in docs/postfix.md, in order, on the sandbox's paths."""
        done = []
        for block in docs.fenced_blocks(DOCS, heading):
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                if not words:
                    continue
                replaced = {DOCS_CONFIG: str(self.toml), **(paths or {})}
                (argv,) = docs.commands(line, replaced, program=words[0])
                if argv[0] == "bouncekeeper":
                    argv += ["--config-dir", str(self.etc)]  # the documented default is /etc/postfix
                else:
                    assert argv[0] == "postfix", f"docs/postfix.md: a command the test does not know: {line}"
                    # postfix prints its errors to a terminal only: give it one, so a failure says why.
                    argv = [
                        "script",
                        "-qec",
                        shlex.join(["postfix", "-c", str(self.etc), *argv[1:]]),
                        "/dev/null",
                    ]
                result = docs.run(argv)
                assert result.returncode == 0, (
                    f"{line}: exit {result.returncode}\n{result.stdout}{result.stderr}"
                )
                done.append(result)
        return done

    def submit_local(self, sender: str, rcpt: str, raw: bytes) -> None:
        """sendmail(1), as cron or a PHP application submits: Postfix's non-SMTP path (non_smtpd_milters)."""
        argv = ["/usr/sbin/sendmail", "-C", str(self.etc), "-f", sender, rcpt]
        subprocess.run(argv, input=raw, check=True, timeout=60, capture_output=True)

    def mailbox(self, user: str) -> list[str]:
        new = self.directory / "mail" / user / "new"
        return [p.read_text(errors="replace") for p in sorted(new.iterdir())] if new.exists() else []


def _toml(d: pathlib.Path, redis: RedisServer, routed: bool) -> str:
    key = d / "verp.key"
    key.write_text("setup-test-key-0123456789abcdef\n")
    # Only the application's mail gets a VERP sender: a person's mail on the same host keeps its own.
    return (
        settings_head(redis.url, [key], redis_extra=FAST_FAILING)
        + f"""[lmtp]
listen = "unix:{d}/lmtp.sock"
socket_mode = 438
"""
        + (_ROUTED_TOML.format(d=d, port=free_port()) if routed else "")
    )


_ROUTED_TOML = """[milter]
policy_socket = "unix:{d}/policy.sock"
policy_filter = "bouncekeeper:[127.0.0.1]:{port}"
protected_recipients = ["{protected}"]
""".replace("{protected}", PROTECTED)


def operators_postfix(d: pathlib.Path, other: pathlib.Path, dead: SmtpSink) -> Postfix:
    mail = d / "mail"
    mail.mkdir(exist_ok=True)
    subprocess.run(["chown", "nobody:nogroup", str(mail)], check=True)
    return Postfix(
        d / "postfix",
        relay_port=0,
        milter_socket=None,
        listeners={"submission": SUBMISSION},
        services=VIRTUAL_SERVICE,
        settings={
            "smtpd_milters": f"unix:{other}",
            "non_smtpd_milters": "$smtpd_milters",
            "smtpd_recipient_restrictions": RESTRICTIONS,
            "virtual_mailbox_domains": "example.org",
            "virtual_mailbox_base": str(mail),
            "virtual_mailbox_maps": f"inline:{{ {PERSON}=alice/ }}",
            "virtual_uid_maps": "static:65534",
            "virtual_gid_maps": "static:65534",
            "transport_maps": f"inline:{{ dead.test=smtp:[127.0.0.1]:{dead.port} }}",
        },
    )


@contextlib.contextmanager
def operators_host(d: pathlib.Path, *, routed: bool = False) -> Iterator[Deployment]:
    """The operator's Postfix running with its own milter, and bouncekeeper's daemons started (not yet
    in Postfix's configuration: `run_documented("Install")` does that)."""
    d.chmod(0o755)
    # Persistent, fsync before each reply: a killed Redis keeps every write it acknowledged (the fault
    # test kills it and counts every bounce afterwards).
    redis = RedisServer(d / "redis", extra=("--appendonly", "yes", "--appendfsync", "always"))
    toml_text = _toml(d, redis, routed)
    milter = MilterProcess(d, f"unix:{d}/milter.sock", toml_text, "bouncekeeper")
    lmtp = ListenerProcess(milter.config, f"unix:{d}/lmtp.sock", d / "lmtp.log")
    other = HeaderMilter(d / "other.sock", OTHER_HEADER, "seen")
    sink = SmtpSink(d / "sink")
    dead = SmtpSink(d / "dead", reject="RCPT")
    with running(redis, other, sink, dead):
        postfix = operators_postfix(d, other.path, dead)
        postfix.relay_port = sink.port
        with running(milter, lmtp, postfix):
            settings = config.load(milter.config)
            signer = verpkeys.load_signer(settings)
            assert signer is not None
            yield Deployment(
                postfix, sink, redis, settings, signer, milter, d, milter.config, dead, lmtp, other
            )
