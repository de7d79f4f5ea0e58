"""The failures we cause at a scripted remote MX, and what the classifier must say about the bounce.

Shared by the real-MTA test (tests/mta/test_real_mta_bounces.py, which makes Postfix, Exim and Sendmail
write their own bounces) and the fast unit test over the bounces it captured (tests/fixtures/mta/).

Kind (the corpus's labelling rule): permanent only when the address itself is dead (unknown user, unknown
host, moved, bad address syntax); a full, disabled or rate-limited mailbox, a too-big message, spam, a
virus, a DMARC, block-list or policy refusal, a refused relay, a full remote system, and anything that
failed only because the queue lifetime ran out are temporary, whatever the status class says. A bare "550
User unknown" is a dead address at RCPT and a content filter's refusal (`filtered`) after DATA.
"""

from __future__ import annotations

from dataclasses import dataclass

from bouncekeeper.core.model import ADDRESS_REASONS, Classification, Failure, MessageType
from tests.support.remote_mx import Reply

REMOTE = "remote.test"  # answered by the scripted MX
NOHOST = "nohost.invalid"  # RFC 2606: never resolves (Postfix: routed to a host that does not)
REFUSED = "refused.test"  # routed to a port where nothing listens
SENDER = "app@sender.test"


@dataclass(frozen=True)
class Case:
    name: str
    recipient: str
    reply: Reply | None  # None: the failure is not a reply (no such host, connection refused)
    kind: str
    reasons: frozenset[str]  # what the reason may be (one, unless the MTA's text decides between two)
    status: str | None  # the status the bounce must carry (None: whatever the MTA picked)
    expires: bool = False  # a temporary failure that becomes a bounce when the queue lifetime runs out

    @property
    def sender(self) -> str:
        """The envelope sender. The remote refuses MAIL FROM by it ("app+NAME@"): MAIL cases have theirs."""
        return _own_sender(self.name) if self.reply is not None and self.reply.stage == "MAIL" else SENDER


def _own_sender(name: str) -> str:
    local, _, domain = SENDER.partition("@")
    return f"{local}+{name}@{domain}"


def _c(name: str, stage: str | None, text: str, kind: str, reasons: str, status: str | None) -> Case:
    domain = {"nohost": NOHOST, "refused": REFUSED}.get(name, REMOTE)
    text = text.replace("{rcpt}", f"<{name}@{domain}>").replace("{sender}", f"<{_own_sender(name)}>")
    reply = Reply(stage, text) if stage else None
    expires = kind == "temporary" and (reply is None or reply.text.startswith("4"))
    return Case(name, f"{name}@{domain}", reply, kind, frozenset(reasons.split()), status, expires)


CASES: tuple[Case, ...] = (
    _c("unknown", "RCPT", "550 5.1.1 {rcpt}: Recipient address rejected: User unknown in local recipient "
       "table", "permanent", "userunknown", "5.1.1"),
    _c("unknowndata", "DATA", "550 5.1.1 {rcpt}... User unknown", "permanent", "userunknown", "5.1.1"),
    _c("full", "RCPT", "552 5.2.2 {rcpt}: Mailbox full, quota exceeded", "temporary", "mailboxfull", "5.2.2"),
    _c("toobig", "DATA", "552 5.3.4 Message size exceeds fixed maximum message size", "temporary",
       "mesgtoobig", "5.3.4"),
    _c("spam", "DATA", "550 5.7.1 Message rejected as spam by the content filter", "temporary",
       "spamdetected", "5.7.1"),
    _c("relay", "RCPT", "554 5.7.1 {rcpt}: Relay access denied", "temporary", "norelaying", "5.7.1"),
    _c("greylist", "RCPT", "450 4.7.1 {rcpt}: Recipient address rejected: Greylisted, try again later",
       "temporary", "expired blocked", None),
    _c("tempfail", "RCPT", "451 4.3.0 {rcpt}: Temporary lookup failure", "temporary", "expired systemerror",
       None),
    _c("moved", "RCPT", "551 5.1.6 {rcpt}: User has moved; please try <new@elsewhere.test>", "permanent",
       "hasmoved", "5.1.6"),
    _c("nodomain", "RCPT", "550 5.1.2 {rcpt}: Recipient address rejected: Domain not found", "permanent",
       "hostunknown", "5.1.2"),
    _c("badsyntax", "RCPT", "553 5.1.3 {rcpt}: Recipient address rejected: bad address syntax",
       "permanent", "userunknown", "5.1.3"),
    _c("disabled", "RCPT", "550 5.2.1 {rcpt}: Mailbox disabled, not accepting messages", "temporary",
       "suspend", "5.2.1"),
    # No enhanced code: Postfix and Exim write 5.0.0, Sendmail 5.1.1 (its default for a 550 to RCPT).
    _c("bareunknown", "RCPT", "550 User unknown", "permanent", "userunknown", None),
    # The same bare text after DATA is a content filter's refusal, not a dead address (core/failure.py,
    # _user_unknown_by_stage): never scored.
    _c("unknownafterdata", "DATA", "550 User unknown", "temporary", "filtered", None),
    _c("notlocal", "RCPT", "551 User not local; please try <new@elsewhere.test>", "permanent", "hasmoved",
       None),
    _c("policy", "RCPT", "550 5.7.1 {rcpt}: Recipient address rejected: Access denied by policy",
       "temporary", "policyviolation", "5.7.1"),
    _c("unavailable", "RCPT", "550 5.5.0 Requested action not taken: mailbox unavailable", "permanent",
       "userunknown", "5.5.0"),
    # Providers' own replies. Gmail answers in several lines (RFC 5321 section 4.2.1 multiline reply).
    _c("gmailunknown", "RCPT", "550-5.1.1 The email account that you tried to reach does not exist. Please "
       "try\r\n550-5.1.1 double-checking the recipient's email address for typos or\r\n550-5.1.1 "
       "unnecessary spaces. For more information, go to\r\n550 5.1.1  "
       "https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp", "permanent", "userunknown", "5.1.1"),
    _c("gmailspam", "DATA", "550-5.7.1 [127.0.0.1] Our system has detected that this message is likely "
       "unsolicited mail. To reduce\r\n550-5.7.1 the amount of spam sent to Gmail, this message has been "
       "blocked. For more\r\n550 5.7.1 information, go to https://support.google.com/mail/?p="
       "UnsolicitedMessageError a1si123 - gsmtp", "temporary", "spamdetected", "5.7.1"),
    _c("gmailreputation", "DATA", "550-5.7.1 [127.0.0.1] Gmail has detected that this message is likely "
       "suspicious due to the very low\r\n550-5.7.1 reputation of the sending IP address. To best protect "
       "our users from\r\n550-5.7.1 spam, the message has been blocked. Please visit\r\n550 5.7.1  "
       "https://support.google.com/mail/answer/188131 for more information. a1si123 - gsmtp", "temporary",
       "blocked", "5.7.1"),
    # Exchange Online: not in the tenant's directory (directory-based edge blocking, at RCPT), and its
    # recipient lookup.
    _c("dbeb", "RCPT", "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
       "[DM6NAM12FT045.eop-nam12.prod.protection.outlook.com]", "permanent", "userunknown", "5.4.1"),
    _c("o365unknown", "RCPT", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient {rcpt} not found by "
       "SMTP address lookup", "permanent", "userunknown", "5.1.10"),
    _c("dmarc", "DATA", "550 5.7.26 Unauthenticated email from sender.test is not accepted due to domain's "
       "DMARC policy", "temporary", "authfailure", "5.7.26"),
    _c("virus", "DATA", "554 5.7.0 Message rejected: virus found in attachment", "temporary",
       "virusdetected", "5.7.0"),
    _c("blocklisted", "RCPT", "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using "
       "zen.spamhaus.org", "temporary", "blocked", "5.7.1"),
    _c("sysfull", "RCPT", "452 4.3.1 Insufficient system storage", "temporary", "systemfull", None),
    # Gmail's words for a mailbox receiving too fast (4.2.1 is "mailbox disabled" in RFC 3463; the text
    # is more precise).
    _c("ratelimit", "RCPT", "450 4.2.1 The user you are trying to contact is receiving mail at a rate that "
       "prevents additional messages from being delivered. Please resend your message at a later time.",
       "temporary", "toomanyconn", None),
    # Refusals of our envelope sender at MAIL FROM: the recipient was never looked at, whatever words
    # of a dead address the reply uses (Postfix reject_unknown_sender_domain, reject_unlisted_sender).
    _c("senderdomain", "MAIL", "553 5.1.8 {sender}: Sender address rejected: Domain not found", "temporary",
       "rejected", "5.1.8"),
    _c("senderunknown", "MAIL", "550 5.1.0 {sender}: Sender address rejected: User unknown in local "
       "recipient table", "temporary", "rejected", "5.1.0"),
    _c("nullmxsender", "MAIL", "550 5.7.27 Sender address has null MX", "temporary", "rejected", "5.7.27"),
    _c("starttls", "MAIL", "530 5.7.0 Must issue a STARTTLS command first", "temporary", "securityerror",
       "5.7.0"),
    # Exim's answer for an ACL "deny" without a message.
    _c("prohibited", "RCPT", "550 Administrative prohibition", "temporary", "policyviolation", None),
    _c("refused", None, "", "temporary", "expired networkerror", None),
    _c("nohost", None, "", "permanent", "hostunknown", None),
)  # fmt: skip

# The scripted MX looks replies up by the recipient's local part, and MAIL ones by the sender's "+NAME@".
REPLIES = {
    (f"{case.name}@" if case.reply.stage == "MAIL" else case.name): case.reply
    for case in CASES
    if case.reply is not None
}
EXPIRING = tuple(case for case in CASES if case.expires)


def check_failure(result: Classification, failure: Failure, case: Case) -> None:
    """The bounce of `case` read right: a bounce, the case's kind, reason and status."""
    assert result.message_type is MessageType.BOUNCE
    assert failure.recipient == case.recipient
    assert failure.kind == case.kind, failure
    assert failure.reason in case.reasons, failure
    if case.status is not None:
        assert failure.status == case.status, failure
    else:  # no enhanced code in the reply, expiry, routing: the MTA's own (Exim says 5.0.0 for any failure)
        assert failure.status is not None
        assert failure.status[0] in "45", failure
    if case.kind == "permanent":  # a dead address needs a 5xx: a 4xx one is retried
        assert failure.dsn_class == "permanent", failure


def check_delay(result: Classification, failure: Failure, case: Case) -> None:
    """A delay warning is a delay: no failure, and no reason that would read as a dead address."""
    assert result.message_type is MessageType.DELAY
    assert not result.failures
    assert failure.recipient == case.recipient
    assert failure.kind == "temporary"
    assert failure.action == "delayed"
    assert failure.reason not in ADDRESS_REASONS, failure
