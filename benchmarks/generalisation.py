"""How the classifier does on formats it was not tuned for: per MTA family, and with each family's own
dialect module switched off (leave-one-family-out).

    python3 benchmarks/generalisation.py [CORPUS_DIR] [--out OUT.jsonl]

What it measures, and why this and not a literal leave-one-source-out: our rules are hand-written, not
fitted, so nothing can be "re-trained without" a corpus folder. What can be taken away is the knowledge
written for one family: each dialect module under core/rules/ (the provider and MTA phrase tables and
their DEAD_AT_ANY_STAGE texts) exists because of one family of senders. For every family the corpus holds,
its messages are classified three ways, in the same process:

- `all`: every rule, as shipped;
- `own off` (the leave-one-family-out figure): the dialect modules written for that family switched off
  (rules.without), so only the generic machinery (RFC 3464 reading, the STRONG/ADDRESS/WEAK phrase tiers,
  status and reply codes) and the other families' tables read it: how a family we never wrote a module for
  would fare;
- `generic`: every dialect module off, for every family.

Families without a module of their own (rfc3464, opensmtpd, dragonfly, ...) score the same in `all` and
`own off`: for them the generic machinery is all there is, and that figure is the honest one. A change
that raises `all` and lowers `own off` taught a dialect what the generic machinery should know, or fitted a
sample; it does not go in. Format readers that are not phrase tables (the Amazon SES JSON reader, fml's
notice reader, the Postfix/Sendmail/Exim report layouts in core/rules/bodies.py) stay on: they read
structure, which is what generalises.

Figures per family: detection recall, recipient precision/recall, kind accuracy against the label
(CORPUS_DIR/score.py's own functions, on the subset). The ALL rows use every family; `own off` there
classifies each message with its own family's modules off. The last line gives kind accuracy over the
recipients whose label is not `filtered`, the one label where Sisimai's expectations and our stage rule
disagree (kind_outside), and the very last the recipients found when each text part is re-encoded in base64 or
quoted-printable, or the line ends made CRLF: a reader tuned to the samples' own encodings would lose
recipients there (flufl.bounce, our fallback, reads undecoded text).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email
import email.policy
import importlib.util
import json
import pathlib
import quopri
import re
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "milter"))

from bouncekeeper.core import rules  # noqa: E402
from bouncekeeper.core.classify import classify  # noqa: E402
from bouncekeeper.ops import classify_command  # noqa: E402 - after the path set-up above

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"  # ../shared beside the checkout

# A corpus group ("sisimai:lhost-gmail", "flufl:yahoo", "php:sendmail-invaliduser") names the MTA or
# provider that wrote the message; these merge the names of one family.
FAMILY_OF = {
    "gmail": "google",
    "gsuite": "google",
    "googlegroups": "google",
    "googleapps": "google",
    "googleworkspace": "google",
    "office365": "microsoft",
    "outlook": "microsoft",
    "exchange": "microsoft",
    "exchange2003": "microsoft",
    "exchange2007": "microsoft",
    "exchangeonline": "microsoft",
    "yahooinc": "yahoo",
    "einsundeins": "gmx",
    "newmailru": "mailru",
    "yandex": "mailru",
    "amazonses": "amazon",
    "receivingses": "amazon",
    "amazonworkmail": "amazon",
    "v5sendmail": "sendmail",
    "sendmail-dsn-hdrs-": "sendmail",
    "sendmail-dsn-hdrs-delivered": "sendmail",
    "sendmail-invaliduser": "sendmail",
    "verizon": "aol",
    "tencentqq": "tencent",
    "notes": "domino",
    "biglobe": "kddi",
    "franceptt": "orange",
    "ezweb": "kddi",
}

# Provenance: the dialect modules written for each family (their docstrings say which senders).
DIALECTS_OF = {
    "google": ("google",),
    "microsoft": ("exchange",),
    "yahoo": ("yahoo",),
    "aol": ("aol",),
    "gmx": ("gmx",),
    "mailru": ("mailru",),
    "amazon": ("amazonses",),
    "qmail": ("qmail",),
    "exim": ("exim",),
    "postfix": ("postfix",),
    "sendmail": ("sendmail",),
    "fml": ("fml",),
    "cox": ("cox",),
    "spectrum": ("spectrum",),
    "godaddy": ("godaddy",),
    "tencent": ("tencent",),
    "domino": ("domino",),
    "imailserver": ("imailserver",),
    "zoho": ("zoho",),
    "kddi": ("kddi",),
    "orange": ("orange",),
    "apple": ("apple",),
    "mimecast": ("mimecast",),
    "iua": ("iua",),
    "facebook": ("facebook",),
}
SMALL = 5  # families with fewer messages are reported together as "(small families)"


def family(label: dict[str, Any]) -> str:
    name = str(label["group"]).partition(":")[2]
    for prefix in ("lhost-", "rhost-"):
        name = name.removeprefix(prefix)
    return FAMILY_OF.get(name, name)


def load_score(corpus: pathlib.Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("corpus_score", corpus / "score.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(corpus: pathlib.Path, name: str) -> dict[str, object]:
    return classify_command.as_record(name, classify((corpus / name).read_bytes()))


def run(corpus: pathlib.Path, files: list[str], off: Callable[[str], tuple[str, ...]]) -> dict[str, Any]:
    """One record per file, each classified with the dialect modules `off(file)` switched off."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in files:
        groups.setdefault(off(name), []).append(name)
    out: dict[str, Any] = {}
    for modules, members in groups.items():  # one table compiled per set of modules switched off
        with rules.without(modules):
            out.update((name, record(corpus, name)) for name in members)
    return out


def reencoded(raw: bytes, how: str) -> bytes:
    """The message with each text/plain part re-encoded in base64 or quoted-printable, or with CRLF line
    ends: the same report in a transfer encoding or line ending its MTA did not happen to use."""
    if how == "crlf":
        return re.sub(rb"\r?\n", b"\r\n", raw)
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in message.walk():
        if part.get_content_type() != "text/plain" or part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = how
        encoded = base64.encodebytes(payload) if how == "base64" else quopri.encodestring(payload)
        part.set_payload(encoded.decode("ascii"))
    return message.as_bytes()


def encodings(corpus: pathlib.Path, files: list[str], score: ModuleType, labels: dict[str, Any]) -> str:
    """Recipient precision/recall of every rule over the corpus re-encoded each way."""
    cells = []
    for how in ("base64", "quoted-printable", "crlf"):
        peer = {
            name: classify_command.as_record(name, classify(reencoded((corpus / name).read_bytes(), how)))
            for name in files
        }
        with contextlib.redirect_stdout(sys.stderr):
            result = score.score(peer, labels, files)["ALL"]
        cells.append(f"{how} {result['recipient_precision']:.3f}/{result['recipient_recall']:.3f}")
    return ", ".join(cells)


def kind_outside(peer: dict[str, Any], labels: dict[str, Any], reason: str) -> float:
    """Kind accuracy as the corpus scorer counts it, over the recipients whose label's reason is not `reason`.

    For `filtered`: Sisimai's labels call an "unknown user" reply `filtered` whenever the report does not
    name RCPT as the stage; our stage rule reads it as a dead address unless the report places it after
    DATA. Where the two disagree no change can raise both figures, so this row shows how the rest moved.
    """
    right = total = 0
    for name, label in labels.items():
        if label["is_bounce"] is None:
            continue
        gold = {d["recipient"]: d for d in label["details"] if d.get("recipient")}
        predicted: dict[str, str] = {}
        for failure in peer.get(name, {"failures": []})["failures"]:
            predicted.setdefault(
                str(failure.get("recipient") or "").lower(), failure.get("kind") or "unknown"
            )
        for address in set(label["recipients"]) & set(predicted):
            detail = gold.get(address, {})
            if detail.get("kind") in ("permanent", "temporary") and detail.get("reason") != reason:
                total += 1
                right += predicted[address] == detail["kind"]
    return right / max(1, total)


def line(title: str, n: int, results: list[dict[str, Any]]) -> str:
    def f(value: float | None) -> str:
        return "  -  " if value is None else f"{value:.3f}"

    cells = [
        f"{f(r['detect_recall'])} {f(r['recipient_precision'])}/{f(r['recipient_recall'])} "
        f"{f(r['kind_accuracy_vs_label'])}"
        for r in results
    ]
    return f"{title:<22} n={n:4d} | " + " | ".join(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", type=pathlib.Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=pathlib.Path, help="write the `all` records here (score.py's format)")
    args = parser.parse_args()
    corpus = args.corpus.resolve()
    score = load_score(corpus)
    labels = score.load_labels()
    files = sorted(labels)
    fam = {name: family(labels[name]) for name in files}
    every = tuple(m.__name__.rpartition(".")[2] for m in rules.DIALECTS)
    runs = {
        "all": run(corpus, files, lambda _name: ()),
        "own off": run(corpus, files, lambda name: DIALECTS_OF.get(fam[name], ())),
        "generic": run(corpus, files, lambda _name: every),
    }
    if args.out:
        with args.out.open("w") as handle:
            for name in files:
                handle.write(json.dumps(runs["all"][name]) + "\n")

    def scores(subset: list[str]) -> list[dict[str, Any]]:
        with contextlib.redirect_stdout(sys.stderr):
            return [score.score(peer, labels, subset)["ALL"] for peer in runs.values()]

    print("per family: detection R, recipients P/R, kind (vs label); columns: " + " | ".join(runs))
    print(line("ALL", len(files), scores(files)))
    sizes: dict[str, list[str]] = {}
    for name in files:
        sizes.setdefault(fam[name], []).append(name)
    small = [name for members in sizes.values() if len(members) < SMALL for name in members]
    for name, members in sorted(sizes.items(), key=lambda item: (-len(item[1]), item[0])):
        if len(members) >= SMALL:
            marker = "*" if name in DIALECTS_OF else " "
            print(line(f"{marker}{name}", len(members), scores(members)))
    print(line(" (small families)", len(small), scores(small)))
    print("* a family with a dialect module of its own: `own off` is its leave-one-family-out figure")
    kinds = " | ".join(f"{kind_outside(peer, labels, 'filtered'):.3f}" for peer in runs.values())
    print(f"kind where the label's reason is not 'filtered' (Sisimai's stage policy; kind_outside): {kinds}")
    print(f"recipients P/R, text parts re-encoded: {encodings(corpus, files, score, labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
