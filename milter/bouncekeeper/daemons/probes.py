"""`bouncekeeper probes run|history`: probe messages to addresses disabled by bounces.

The Launchpad plan and Mailman: an address disabled because it bounced gets a probe once every
`interval_days` days, at most `count` times, sent through the local MTA with a fresh signed VERP probe
token (token mode, context "probe") as the envelope sender. The text tells the owner the address is
disabled and where to re-enable it. When a probe bounces, the bounce comes back to that token address,
the service records it for the address with context "probe", and the disable is confirmed: no more
probes go to that address. A probe that does not bounce proves nothing by itself (it may sit unread),
so it re-enables nothing; the owner does, with the link.

Cron-safe: one run at a time (a lock in Redis), and the history in Redis decides what is due, so
running it hourly sends each probe once.
"""

from __future__ import annotations

import argparse
import email.message
import email.utils
import json
import pathlib
import smtplib
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from bouncekeeper import config, verpkeys
from bouncekeeper.core import verp
from bouncekeeper.core.scoring import State
from bouncekeeper.log import get_logger
from bouncekeeper.service.bounces import Service
from bouncekeeper.store import StoreUnavailable
from bouncekeeper.store.keys import STATE as STATE_SUFFIX
from bouncekeeper.store.runlock import Busy, RunLock

log = get_logger("bouncekeeper.probes")  # as before the folders: log filters use it

CONTEXT = "probe"
DAY = 86_400
HISTORY_SIZE = 50
LOCK_TTL = 3600

DEFAULT_TEMPLATE = """Subject: Your address {address} is disabled

Hello,

mail to {address} has been bouncing, so we stopped sending mail to it.

If you are reading this, the address works again. Re-enable it here:

  {reenable_url}

This message was sent automatically; there is no need to reply.
"""


@dataclass(frozen=True)
class Probe:
    at: float
    message_id: str
    envelope: str  # the VERP token address the probe was sent from
    result: str  # "sent", or "refused: <reply>" when the MTA would not take it

    @property
    def date(self) -> str:
        return email.utils.formatdate(self.at, usegmt=True)


@dataclass(frozen=True)
class Status:
    probe: Probe
    bounced: bool


def history(service: Service, address: str) -> list[Status]:
    """The address's probes, newest first, each with whether a bounce came back for it."""
    probes = [Probe(**json.loads(r)) for r in service.store.probes(address, HISTORY_SIZE)]
    view = service.store.view(address, events=service.store.settings.history_size)
    bounce_times = sorted(float(e["at"]) for e in view.events if e.get("context") == CONTEXT)
    out = []
    for i, probe in enumerate(probes):
        until = probes[i - 1].at if i else float("inf")  # a bounce belongs to the latest probe before it
        out.append(Status(probe, any(probe.at <= t < until for t in bounce_times)))
    return out


def due(
    view_state: State, since: float | None, statuses: Sequence[Status], now: float, s: config.ProbeSettings
) -> str:
    """Why this address gets a probe now ("" = it does), a pure decision on its state and history."""
    if view_state is not State.DISABLED_BOUNCES:
        return "not disabled by bounces"  # the user or an admin chose: no probes
    current = [st for st in statuses if since is None or st.probe.at >= since]  # this disable period
    if any(st.bounced for st in current):
        return "a probe bounced: disable confirmed"
    if len(current) >= s.count:
        return f"{s.count} probes sent"
    if current and now - current[0].probe.at < s.interval_days * DAY:
        return "probed less than interval_days ago"
    return ""


def render(template: str, address: str, reenable_url: str) -> tuple[str, str]:
    text = template.replace("{address}", address).replace("{reenable_url}", reenable_url)
    head, _, body = text.partition("\n\n")
    subject = (
        head.removeprefix("Subject:").strip() if head.startswith("Subject:") else "Your address is disabled"
    )
    return subject, body if head.startswith("Subject:") else text


@dataclass
class RunReport:
    sent: list[str]
    skipped: dict[str, str]


Send = Callable[[str, str, bytes], str]


def smtp_sender(host: str, port: int, timeout: float = 30.0) -> Send:
    def send(envelope: str, rcpt: str, message: bytes) -> str:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            try:
                smtp.sendmail(envelope, [rcpt], message)
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = exc.recipients[rcpt]
                return f"refused: {code} {text.decode(errors='replace')}"
        return "sent"

    return send


def run(service: Service, send: Send, *, now: float | None = None, dry_run: bool = False) -> RunReport:
    settings = service.settings
    s = settings.probes
    keyring = service.keyring
    if keyring is None:
        raise config.ConfigError(settings.source, "verp.secret_files", "probes need VERP keys")
    domain = verpkeys.require_bounce_domain(settings)
    if not s.sender:
        raise config.ConfigError(settings.source, "probes.sender", "required: the From: of the probes")
    template = pathlib.Path(s.template_file).read_text("utf-8") if s.template_file else DEFAULT_TEMPLATE
    moment = time.time() if now is None else now
    report = RunReport([], {})
    with RunLock(service.store, service.store.keys.probes_lock, LOCK_TTL):
        for address in sorted(service.store.addresses((STATE_SUFFIX,))):
            view = service.store.view(address, events=0)
            why = due(view.state, view.since, history(service, address), moment, s)
            if why:
                report.skipped[address] = why
                continue
            if dry_run:
                report.sent.append(address)
                continue
            message_id = email.utils.make_msgid("probe", domain=domain)
            token = service.register_token([address], message_id=message_id, sender=s.sender, context=CONTEXT)
            envelope = verp.encode_token(
                token,
                keyring=keyring,
                bounce_domain=domain,
                day=verpkeys.today(moment),
                prefix=settings.verp.local_prefix,
            )
            url = s.reenable_url.replace("{address}", urllib.parse.quote(address, safe="@"))
            subject, body = render(template, address, url)
            msg = email.message.EmailMessage()
            msg["From"] = s.sender
            msg["To"] = address
            msg["Subject"] = subject
            msg["Date"] = email.utils.formatdate(moment, usegmt=True)
            msg["Message-ID"] = message_id
            # RFC 3834 section 5: an automatic message; auto-responders must not answer it.
            msg["Auto-Submitted"] = "auto-generated"
            msg.set_content(body)
            result = send(envelope, address, msg.as_bytes())
            probe = Probe(moment, message_id, envelope, result)
            service.store.add_probe(address, json.dumps(asdict(probe)), keep=HISTORY_SIZE)
            log.info("probes: %s probe to %s from %s (%s)", result, address, envelope, message_id)
            report.sent.append(address)
    return report


# --- command line -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="probes_command", required=True)
    r = sub.add_parser("run", help="send the probes that are due (for cron)")
    r.add_argument("--dry-run", action="store_true", help="only list who would get a probe")
    h = sub.add_parser("history", help="the probes sent to an address and whether they bounced")
    h.add_argument("address")
    h.add_argument("--json", action="store_true")


def command(args: argparse.Namespace, settings: config.Settings) -> int:
    out = sys.stdout
    service = Service.open(settings)
    try:
        if args.probes_command == "history":
            address = args.address.strip().lower()
            statuses = history(service, address)
            if args.json:
                rows = [{**asdict(st.probe), "date": st.probe.date, "bounced": st.bounced} for st in statuses]
                out.write(json.dumps(rows, indent=2) + "\n")
            elif not statuses:
                out.write(f"{address}: no probes\n")
            for st in [] if args.json else statuses:
                verdict = "bounced (disable confirmed)" if st.bounced else "no bounce"
                out.write(f"{st.probe.date}  {st.probe.result}  {verdict}  {st.probe.message_id}\n")
            return 0
        if not settings.probes.enabled:
            log.info("probes: disabled ([probes] enabled = false); nothing to do")
            return 0
        report = run(
            service, smtp_sender(settings.probes.smtp_host, settings.probes.smtp_port), dry_run=args.dry_run
        )
        verb = "would probe" if args.dry_run else "probed"
        out.write(f"{verb} {len(report.sent)} address(es); {len(report.skipped)} not due\n")
        for address in report.sent:
            out.write(f"  {address}\n")
        return 0
    except Busy as exc:
        log.warning("probes: %s; not running twice", exc)
        return 75
    except (StoreUnavailable, OSError, smtplib.SMTPException) as exc:
        log.error("probes: stopped: %s", exc)
        return 75  # EX_TEMPFAIL: cron tries again; what was sent is in the history
    finally:
        service.close()
