"""Sendmail: texts of its "Returned mail" reports, and how its reports are laid out: a transcript per SMTP
session, a multi-line reply's later lines only there, a delivery program's exit status as a diagnostic."""

from __future__ import annotations

import re

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.USERUNKNOWN, r"\.\.\. user unknown|\.\.\. no such user|mailbox unavailable or access denied"),
    (
        Reason.HOSTUNKNOWN,
        r"host unknown \(name server:|name server: .{0,60} host not found|"
        r"\.\.\. deferred: name server timeout",
    ),
    (Reason.EXPIRED, r"cannot send message for \d+ days?|message could not be delivered for \d+"),
    (Reason.NORELAYING, r"\.\.\. relaying denied"),
    (Reason.REJECTED, r"\.\.\. sender (?:address )?rejected|domain of sender address .{0,80} does not exist"),
    (Reason.MAILERERROR, r"unknown mailer error|\.\.\. service unavailable"),
    (Reason.SYSTEMFULL, r"insufficient disk space"),
)


# Its transcripts: "... while talking to mx.example.org.:" opens one SMTP session's lines.
SESSION_LINE = re.compile(r"^[ \t.>]*while talking to ", re.IGNORECASE | re.MULTILINE)


def own_session(text: str, position: int, address: str) -> int:
    """Where the report tells what happened to `address`. Sendmail lists the failed recipients first and
    then one transcript per SMTP session ("... while talking to HOST:", ">>> RCPT To:<a@b>", "<<< 550
    ..."): for a recipient that a session's lines name, its report is that session, from its first line.
    Elsewhere (and in every other MTA's report), the first mention: `position`."""
    if "talking to" not in text:
        return position
    lower = text.lower()
    mention = lower.find(address, position + len(address))
    for _ in range(4):
        if mention < 0:
            break
        line_start = text.rfind("\n", 0, mention) + 1
        # The session this mention belongs to: the nearest session line above it, below the first mention.
        sessions = list(SESSION_LINE.finditer(text, position, line_start + 1))
        if sessions:
            return sessions[-1].start()
        mention = lower.find(address, mention + len(address))
    return position


_TRANSCRIPT = re.compile(r"^\s*(?:>>>\s*(?P<cmd>[A-Za-z]+)|<<<\s*(?P<code>[2-5])\d\d)", re.MULTILINE)


def transcript_command(text: str) -> str | None:
    """The command a transcript's first refusal answered (">>> DATA" then "<<< 550 ..."), or None."""
    if ">>>" not in text:
        return None  # no transcript
    last = None
    lines = list(_TRANSCRIPT.finditer(text))
    for index, line in enumerate(lines):
        if line.group("cmd"):
            last = line.group("cmd").upper()[:4]
        elif last is not None and line.group("code") in ("4", "5"):
            following = lines[index + 1] if index + 1 < len(lines) else None
            if last == "DATA" and following is not None and following.group("code"):
                # Two replies to one DATA: with PIPELINING the server answers the RCPT commands sent
                # ahead of DATA first, in order (RFC 2920 section 3.1), so this one was a RCPT's.
                return "RCPT"
            return last
    return None


def whole_reply(first: str, report: str) -> str:
    """A multi-line reply whose Diagnostic-Code holds only its first line, completed from the transcript.

    Sendmail 8.17 writes only the first line in Diagnostic-Code and "(reason: ...)"; its transcript
    ("<<< 550-5.7.1 ...") has them all, and the reason is often on a later one (Gmail: "... due to the
    very low" / "reputation of the sending IP address"; seen with a real Sendmail,
    tests/fixtures/mta/sendmail-gmailreputation.eml). Postfix and Exim join the lines themselves.
    """
    code = first[:3]
    lines = report.split("\n")
    head = first.strip()
    for index, line in enumerate(lines):
        if head not in line:
            continue
        pieces = [head]
        for following in lines[index + 1 : index + 40]:
            rest = following.strip()
            rest = rest[3:].lstrip() if rest.startswith("<<<") else rest
            if not rest.startswith(code) or rest[3:4] not in ("-", " "):
                break
            pieces.append(rest)
            if rest[3] == " ":
                break  # the last line of the reply
        if len(pieces) > 1:  # Sendmail's "(reason: 550-...)" line comes first, alone: the transcript next
            return " ".join(pieces)
    return first


def program_exit(diagnostic_type: str | None, diagnostic: str) -> bool:
    """ "Diagnostic-Code: X-Unix; 127": the exit status of a local delivery program (its prog mailer, RFC
    3464 section 2.3.6), which a vague line of the program's output does not explain better."""
    return diagnostic_type == "x-unix" and diagnostic.isdigit()
