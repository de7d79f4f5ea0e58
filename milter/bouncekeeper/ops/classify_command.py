"""`bouncekeeper classify [--jsonl] [--rcpt ENVELOPE_RCPT] FILE...`: run the classifier on message files.

Human-readable by default; `--jsonl` writes one JSON object per file in the format the labelled corpus's
scorer reads, with `file` exactly as given on the command line. `-` reads standard input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from bouncekeeper import config
from bouncekeeper.core.classify import classify
from bouncekeeper.core.model import Classification, Failure

# One encoder for every line: json.dumps with any non-default option builds a new one per call.
_JSON = json.JSONEncoder(ensure_ascii=False)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jsonl", action="store_true", help="one JSON object per file (score.py's format)")
    p.add_argument(
        "--rcpt",
        metavar="ENVELOPE_RCPT",
        help="the envelope recipient the messages were delivered to; decoded as VERP when [verp] keys "
        "are configured, and then authoritative for the failed recipient",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="message files; - for standard input")


def run(args: argparse.Namespace, settings: config.Settings) -> int:
    verp_recipient, verp_status = _verp_recipient(args.rcpt, settings)
    status = 0
    out = sys.stdout
    for name in args.files:
        try:
            raw = sys.stdin.buffer.read() if name == "-" else _read(name)
        except OSError as exc:
            print(f"bouncekeeper classify: {name}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
            continue
        result = classify(raw, verp_recipient=verp_recipient)
        if args.jsonl:
            record = as_record(name, result)
            if verp_status is not None:
                record["verp_status"] = verp_status
            out.write(_JSON.encode(record) + "\n")
        else:
            _print_human(name, result, verp_status, out)
    return status


def _read(name: str) -> bytes:
    with open(name, "rb") as handle:
        return handle.read()


def _verp_recipient(rcpt: str | None, settings: config.Settings) -> tuple[str | None, str | None]:
    """The original recipient when `rcpt` is a valid VERP address of ours, and the decode status."""
    if rcpt is None:
        return None, None
    if not settings.verp.bounce_domain or not settings.verp.secret_files:
        return None, "not_configured"
    # Imported here: hashlib, hmac and the keyring are start-up a command without --rcpt never needs.
    from bouncekeeper import verpkeys  # noqa: PLC0415
    from bouncekeeper.core import verp  # noqa: PLC0415

    result = verpkeys.decode_with(rcpt, verpkeys.load_keyring(settings), settings, day=verpkeys.today())
    # Only a valid signature makes the recipient authoritative; forged, expired or foreign addresses
    # leave the classifier to read the report itself.
    recipient = result.recipient if result.status is verp.VerpStatus.VALID else None
    return recipient, result.status.value


def failure_record(failure: Failure) -> dict[str, object]:
    return {
        "recipient": failure.recipient,
        "kind": failure.kind.value,
        "status": failure.status,
        "reason": failure.reason.value,
        "dsn_class": failure.dsn_class.value,
        "reply_code": failure.reply_code,
        "diagnostic": failure.diagnostic,
        "remote_mta": failure.remote_mta,
        "stage": failure.stage.value,
        "action": failure.action,
        "smtp_command": failure.smtp_command,
    }


def as_record(name: str, result: Classification) -> dict[str, object]:
    """The JSON object for one file (the corpus's scorer reads `file` and `failures`)."""
    return {
        "file": name,
        "is_bounce": result.is_bounce,
        "message_type": result.message_type.value,
        "failures": [failure_record(f) for f in result.failures],
        "delays": [failure_record(f) for f in result.delays],
        "loop_signals": list(result.loop_signals),
        "original_message_id": result.original_message_id,
        "verp_recipient": result.verp_recipient,
        "errors": list(result.errors),
        "limits": list(result.limits),
    }


def _print_human(name: str, result: Classification, verp_status: str | None, out: TextIO) -> None:
    head = f"{name}: {result.message_type.value}"
    if result.failures:
        head += f" ({len(result.failures)} failed)"
    if result.delays:
        head += f" ({len(result.delays)} delayed)"
    lines = [head, *_failure_lines("failed", result.failures), *_failure_lines("delayed", result.delays)]
    if verp_status is not None:
        lines.append(
            f"  verp: {verp_status}" + (f" -> {result.verp_recipient}" if result.verp_recipient else "")
        )
    if result.loop_signals:
        lines.append("  loop signals: " + ", ".join(result.loop_signals))
    if result.original_message_id:
        lines.append(f"  original Message-ID: {result.original_message_id}")
    for error in result.errors:
        lines.append(f"  stage error: {error}")
    if result.limits:
        lines.append("  cut short (work caps reached): " + ", ".join(result.limits))
    out.write("\n".join(lines) + "\n")


def _failure_lines(label: str, failures: Sequence[Failure]) -> Iterator[str]:
    for f in failures:
        code = " ".join(x for x in (str(f.reply_code or ""), f.status or "") if x) or "-"
        yield f"  {label:<8}{f.recipient}  {f.kind.value}  {f.reason.value}  {code}  [{f.stage.value}]"
        if f.diagnostic:
            yield f"          {_shorten(f.diagnostic, 160)}"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
