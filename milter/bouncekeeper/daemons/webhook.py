"""One signed webhook request: its signature, what a receiver checks (`verify`), the POST, and what the
receiver's answer means for the notifier (delivered, worth a retry, or dead).

Each request is signed: `X-Bouncekeeper-Signature: sha256=HEX` where HEX is
HMAC-SHA256(secret, TIMESTAMP + "." + BODY) and TIMESTAMP is the `X-Bouncekeeper-Timestamp` header (the
timestamp is signed so that a captured request cannot be replayed later; `verify` checks both).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

SIGNATURE_HEADER = "X-Bouncekeeper-Signature"
TIMESTAMP_HEADER = "X-Bouncekeeper-Timestamp"


class Delivery(StrEnum):
    """How one delivery attempt to one target ended."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


# --- signatures -------------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(  # noqa: PLR0913 - a receiver's one call: the four signed parts, the clock, a leeway
    secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: float = 300
) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent (constant-time compare)."""
    try:
        age = abs(now - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)


# --- HTTP -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    result: Delivery
    status: int | None = None
    error: str = ""
    retry_after: float | None = None


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Attempt:
    """POST `body`; classify the answer as delivered, worth retrying, or dead."""
    parts = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    try:
        conn.request("POST", path, body=body, headers=dict(headers))
        response = conn.getresponse()
        response.read(65536)
        status = response.status
        retry_after = _retry_after(response.getheader("Retry-After"))
    except (OSError, http.client.HTTPException) as exc:
        # Refused, reset, timed out, TLS failure, garbage answer: the receiver is down or sick: retry.
        return Attempt(Delivery.RETRY, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    if 200 <= status < 300:
        return Attempt(Delivery.DELIVERED, status)
    if status == 429 or status >= 500:
        return Attempt(Delivery.RETRY, status, f"HTTP {status}", retry_after)
    # 3xx: following a redirect would send the signed body somewhere unconfigured. 4xx: the receiver
    # says the request itself is wrong; the same request will be wrong next time too.
    return Attempt(Delivery.DEAD, status, f"HTTP {status}")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # the HTTP-date form: our own backoff is good enough
