"""A private Dovecot IMAP server for the tests: loopback only, a throwaway mailbox under a temp dir.

passwd-file authentication with a plaintext password (allowed because it only listens on 127.0.0.1),
an IMAP port and an IMAPS port with a self-signed certificate made by openssl for 127.0.0.1. Started
with `dovecot -c CONF` (it daemonises and writes run/master.pid), stopped by that PID.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    user = "bounces"
    password = "imap-test-password"

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.cert = directory / "cert.pem"

    def start(self) -> Dovecot:
        binary = shutil.which("dovecot")
        if binary is None:
            raise RuntimeError("dovecot is not installed (scripts/sysdeps.sh installs dovecot-imapd)")
        d = self.directory
        d.chmod(0o755)
        for sub in ("run", "state", "mail"):
            (d / sub).mkdir(exist_ok=True)
        # Dovecot never gives mail access to uid 0: as root, the mailbox belongs to nobody.
        if os.geteuid() == 0:
            account = pwd.getpwnam("nobody")
            os.chown(d / "mail", account.pw_uid, account.pw_gid)
            extra = ""
        else:
            account = pwd.getpwuid(os.geteuid())
            extra = f"default_internal_user = {account.pw_name}\ndefault_login_user = {account.pw_name}\n"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2",
             "-keyout", str(d / "key.pem"), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        (d / "passwd").write_text(
            f"{self.user}:{{PLAIN}}{self.password}:{account.pw_uid}:{account.pw_gid}::{d}/mail/{self.user}::\n"
        )
        (d / "dovecot.conf").write_text(
            f"""base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
{extra}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}
mail_location = maildir:{d}/mail/%u
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
"""
        )
        subprocess.run([binary, "-c", str(d / "dovecot.conf")], check=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.imap_port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot did not start: {self.log()}") from None
                time.sleep(0.02)

    def log(self) -> str:
        path = self.directory / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        pid_file = self.directory / "run" / "master.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
