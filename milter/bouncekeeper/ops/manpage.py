"""`bouncekeeper man`: the bouncekeeper(1) manual page, generated from the CLI's own argparse parser.

Every command, its arguments and their help come from `cli.build_parser()`, so the page cannot fall
behind the program. `make install` writes it to $(PREFIX)/share/man/man1/bouncekeeper.1.
"""

from __future__ import annotations

import argparse
import datetime

from bouncekeeper import __version__, config

DESCRIPTION = """\
bouncekeeper rewrites the envelope sender of an application's mail to a signed VERP address, catches
the bounces that come back (through the milter for Postfix and Sendmail, or the LMTP listener for
Exim), classifies each failed recipient as permanent or temporary, and keeps per-address counters in
Redis so that the application can stop mailing dead addresses. A fresh installation only observes:
[policy] mode = "observe" changes nothing in the mail flow, and no sender is rewritten until
[verp] senders lists it."""

FILES = f"""\
.TP
.I {config.DEFAULT_PATH}
The settings (TOML), read when neither \\-\\-config nor $BOUNCEKEEPER_CONFIG names a file;
.B bouncekeeper sample\\-config
prints a commented sample.
.TP
.I /var/lib/bouncekeeper
state_dir: the embedded Redis server's data when [redis] url is empty.
.TP
.I /run/bouncekeeper
The sockets of the milter and the LMTP listener under the systemd units."""


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, hyphens that are not line breaks, a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for action in parser._actions:  # argparse has no public way to list them
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if action.option_strings:
            label = ", ".join(action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or action.dest.upper()
                label += " " + (" ".join(metavar) if isinstance(metavar, tuple) else metavar)
        else:
            label = str(action.metavar or action.dest)
        lines += [".TP", f".B {_roff(label)}", _roff(action.help or "")]
    return lines


def _commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    lines: list[str] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            full = f"{prefix} {name}".strip()
            lines += [".SS " + _roff(full), _roff(helps.get(name) or sub.description or "")]
            lines += [".PP", ".B " + _roff(sub.format_usage().removeprefix("usage: ").strip())]
            lines += _options(sub)
            lines += _commands(sub, full)
    return lines


def render(parser: argparse.ArgumentParser, today: datetime.date | None = None) -> str:
    day = (today or datetime.date.today()).isoformat()
    lines = [
        f'.TH BOUNCEKEEPER 1 "{day}" "bouncekeeper {__version__}" "User Commands"',
        ".SH NAME",
        "bouncekeeper \\- bounce handling inside the MTA",
        ".SH SYNOPSIS",
        ".B bouncekeeper",
        "[\\-\\-config PATH] COMMAND [ARGUMENTS]",
        ".SH DESCRIPTION",
        _roff(DESCRIPTION),
        ".SH OPTIONS",
        *_options(parser),
        ".SH COMMANDS",
        *_commands(parser, "bouncekeeper"),
        ".SH EXIT STATUS",
        "0 on success; 78 (EX_CONFIG) for a configuration error, naming the file and the key;",
        ".B health",
        "answers as a Nagios plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        ".SH FILES",
        FILES,
        ".SH SEE ALSO",
        ".BR postfix (1),",
        ".BR sendmail (8),",
        ".BR exim (8),",
        ".BR systemctl (1);",
        "docs/operator\\-guide.md in the source distribution.",
    ]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--date", type=datetime.date.fromisoformat, help="the page's date (default: today)")
