"""Zoho Mail (X-ZohoMail): "<address> Invalid Address, ERROR_CODE :550, ERROR_CODE :<reply>" per
recipient, or "[Status: Error, Address: <a@b>, ResponseCode 421, , Host not reachable.]" when it gave up
on a host it could not reach (read from Sisimai's Lhost::Zoho).
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    # The final report after retrying a host that never answered: the message expired in the queue.
    (Reason.EXPIRED, r"responsecode 4\d\d, , host not reachable"),
)
