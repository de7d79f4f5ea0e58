"""Orange / Wanadoo and La Poste (France): replies end with a code "OFR004_201", "LPN105_104", "OUK_513"
(prefix, sometimes a sub-code, then a three-digit code) from their published list; Sisimai's
Rhost::FrancePTT tabulates the codes. The English and French texts beside them vary, the code does not.

Left out: the codes the list gives no reason for (105, 108, 109, 201, 423, 424, 513: "please try later"),
so the words or the status decide.
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

# The code after the prefix: "ofr_506", "lpn105_104", "ofr004-201", "lpn416".
_CODE = r"\b(?:lpn|ofr|ouk)(?:_|\d{3}[-_])?"
PATTERNS: tuple[tuple[Reason, str], ...] = (
    (Reason.USERUNKNOWN, _CODE + r"41[68]\b"),
    (Reason.MAILBOXFULL, _CODE + r"417\b"),
    # 420 "boite du destinataire archivee" (archived), 426 "le compte du destinataire est bloque".
    (Reason.SUSPEND, _CODE + r"42[06]\b"),
    (Reason.BLOCKED, _CODE + r"(?:10[23]|401|510|999)\b"),
    (Reason.TOOMANYCONN, _CODE + r"104\b"),
    (Reason.SECURITYERROR, _CODE + r"(?:305|402)\b"),
    (Reason.REJECTED, _CODE + r"(?:40[35]|415|421)\b"),
    (Reason.SYSTEMERROR, _CODE + r"505\b"),
    (Reason.SPAMDETECTED, _CODE + r"506\b"),
    (Reason.MESGTOOBIG, _CODE + r"514\b"),
)
