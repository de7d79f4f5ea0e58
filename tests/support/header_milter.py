"""A tiny pymilter milter that adds one header to every message: it stands for the OpenDKIM or OpenDMARC
an operator already runs, so a test can see that a merged configuration still passes every message to it.

`python -m tests.support.header_milter SOCKET_PATH HEADER VALUE` runs it; `HeaderMilter` runs that as a
process for a test.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

from tests.support.postfix import ROOT


def main(path: str, header: str, value: str) -> None:
    import Milter  # noqa: PLC0415 - only the milter process needs pymilter

    class AddHeader(Milter.Base):  # type: ignore[misc]
        def eom(self) -> int:
            self.addheader(header, value)
            return int(Milter.ACCEPT)

    os.umask(0o111)  # the socket must be writable by Postfix's smtpd, which runs as user postfix
    Milter.factory = AddHeader
    Milter.set_flags(Milter.ADDHDRS)
    Milter.runmilter("header-milter", f"unix:{path}", 60)


class HeaderMilter:
    def __init__(self, path: pathlib.Path, header: str, value: str) -> None:
        self.path = path
        self.header = header
        self.value = value
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HeaderMilter:
        self.path.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "tests.support.header_milter", str(self.path), self.header, self.value]
        env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'milter'}")
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not self.path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the header milter did not open {self.path}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        # pymilter's accept loop takes seconds to notice SIGTERM; nothing here needs a clean exit.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


if __name__ == "__main__":
    main(*sys.argv[1:4])
