"""The classifier's work caps and reading bounds, in one place: every stage of the triage reads them.

What Classification.limits can name, and the cap each stands for:
  "bytes"       the message was longer than MAX_PARSE_BYTES, or than MAX_FLUFL_BYTES when flufl.bounce's
                detectors ran; the rest was not read
  "mime"        more than mime.MAX_DEPTH levels or mime.MAX_PARTS parts; deeper or later ones not read
  "headers"     a header block over mime.MAX_HEADER_BYTES or mime.MAX_HEADERS fields; the rest not read
  "dsn"         a delivery-status part over dsn.MAX_CHARS characters; the rest not read
  "recipients"  more than MAX_RECIPIENTS recipients named; the first ones kept
  "addresses"   more than bodies.MAX_ADDRESSES addresses in a plain-text report; the rest not examined
"""

from __future__ import annotations

# Bounces put their report first; what follows is the returned original, which can be huge. Parsing is
# bounded so that a 30 MB message costs what a 4 MB one does; a cut MIME tree parses leniently.
MAX_PARSE_BYTES = 4 * 1024 * 1024
# flufl.bounce's detectors run a dozen patterns over every body line: on 4 MiB they take 1.5 s. They read
# the first 256 KiB (four times the corpus's largest message).
MAX_FLUFL_BYTES = 256 * 1024
MAX_TEXT_CHARS = 64 * 1024
# The human-readable report comes first; what follows the first 16 KiB is the returned original.
MAX_REPORT_CHARS = 16 * 1024
# Reasons are read from the start of a diagnostic or report: past 2,000 characters it is boilerplate.
MAX_EXPLAIN_CHARS = 2000
# Failed or delayed recipients read from one message: RFC 5321 section 4.5.3.1.8 asks servers to accept
# 100 recipients per message, and a report lists at most those one message had. Past this many, the
# rest are not read (Classification.limits says "recipients"): the work per message stays bounded
# whatever a stranger sends (docs/classify-cost.md: a DSN naming 20,000 recipients took 2.5 s).
MAX_RECIPIENTS = 1000


def note(limits: list[str], limit: str) -> None:
    """Record that a cap was reached: each name once, in the order met (Classification.limits)."""
    if limit not in limits:
        limits.append(limit)
