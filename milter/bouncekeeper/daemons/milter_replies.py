"""The milter's answers to the SMTP client, in one table: (reply code, RFC 3463 enhanced status code, text)
for each decision the adapter translates (the guards at RCPT, suppression, the loop action, the store's
outage), sent with `setreply(*REPLY)`; the policy service (policyd.py) gives the same ones as its actions.
A forged or expired bounce address gets the core's refusal (core/rcpt.RcptVerdict.refusal), the same as
from the LMTP listener and the policy service."""

from __future__ import annotations

Reply = tuple[str, str, str]

BAD_ADDRESS: Reply = ("550", "5.1.3", "Bad recipient address syntax")
# access(5) and Postfix's milter client: after a 421 the MTA disconnects the client.
FORGED_CLOSE: Reply = ("421", "4.7.0", "Too many invalid bounce addresses, closing connection")
TOO_MANY_CLOSE: Reply = ("421", "4.5.3", "Too many recipients, closing connection")
TOO_MANY: Reply = ("452", "4.5.3", "Too many recipients")
# RFC 5321 section 4.5.3.1.10: a client must handle 452 by sending the other recipients later.
ONE_PER_MESSAGE: Reply = ("452", "4.5.3", "Too many recipients: one recipient per message, please")
LOOP_REFUSED: Reply = ("550", "5.7.1", "Automatic message to an address that does not accept them")
STORE_DOWN: Reply = ("451", "4.3.0", "Bounce store unavailable, please try again later")
TEMPFAIL: Reply = ("451", "4.3.0", "Temporary local problem, please try again later")


def suppressed(address: str) -> Reply:
    """The refusal of an outbound recipient the store says is disabled."""
    return ("550", "5.1.1", f"<{address}>: recipient disabled after repeated bounces (bouncekeeper)")
