"""IBM (HCL) Domino and Lotus Notes: "DELIVERY FAILURE:" / "Undeliverable message" reports whose reason
follows "because:" or "------- Failure Reasons --------" (read from Sisimai's Lhost::Domino and
Lhost::Notes, which quote the Domino router's texts).
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

PATTERNS: tuple[tuple[Reason, str], ...] = (
    (
        Reason.USERUNKNOWN,
        r"not listed in (?:the )?domino directory|not listed in public name & address book|"
        r"domino ディレクトリには見つかりません|ディレクトリのリストにありません",
    ),
    # More than one directory entry matched the name, or the router found no route to the user's mail
    # server (a misconfigured Domino domain or forwarding rule): the directory's or the router's fault;
    # Domino says nothing about the mailbox itself.
    (Reason.SYSTEMERROR, r"several matches found in domino directory|cannot route mail to user"),
    (Reason.NETWORKERROR, r"message has exceeded maximum hop count"),
)
