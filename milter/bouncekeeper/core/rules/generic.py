"""Phrase families used by many MTAs, in three tiers.

STRONG: texts that name a non-address reason precisely (a full mailbox, a block list, a virus); they win
even over an address-looking status code, because MTAs put 5.1.1 or 5.7.1 on anything.
ADDRESS: texts that say the address is dead.
WEAK: vague texts ("rejected", "policy", "denied") that only decide when nothing better matched.
Each tier is ordered: the first matching row wins. Patterns are case-insensitive regular expressions.
"""

from __future__ import annotations

from bouncekeeper.core.model import Reason

R = Reason

STRONG: tuple[tuple[Reason, str], ...] = (
    (R.VIRUSDETECTED, r"\bvirus|malware|\binfected\b|trojan"),
    (
        R.MAILBOXFULL,
        r"mail ?box (?:is |was )?(?:full|over ?quota)|over ?quota|quota (?:exceeded|violation|full)",
    ),
    (R.MAILBOXFULL, r"exceed(?:ed|s)? (?:the |his |her |its |their )?(?:storage|quota|mailbox size|allocat)"),
    (
        R.MAILBOXFULL,
        r"(?:mailbox|account|inbox|disk) (?:size|storage|space)? ?(?:is |was )?(?:full|"
        r"limit (?:was )?exceeded)",
    ),
    (
        R.MAILBOXFULL,
        r"insufficient (?:disk )?space|not enough (?:disk )?space|mailbox has exceeded|user.{0,20}is over",
    ),
    (
        R.MAILBOXFULL,
        r"(?:mail ?folder|mailbox|inbox)(?: size)? (?:is )?(?:full|exceeds)|exceeding .{0,20}quota|"
        r"quota (?:usage )?(?:exceeded|full)|casilla .{0,30}(?:agotad|llen)",
    ),
    (R.MAILBOXFULL, r"(?:reached|exceeded|over) (?:his |her |its |their |the |disk |storage )*quota"),
    (R.MAILBOXFULL, r"too many messages in|maildir.{0,20}(?:full|quota)|mail ?box.{0,40}\bfull\b"),
    # The same in the languages providers answer in when no English follows (French, Spanish, Italian,
    # Dutch, Polish, Chinese, Japanese; German is in rules/gmx.py).
    (
        R.MAILBOXFULL,
        r"bo[iî]te (?:aux lettres |mail |de r[ée]ception )?(?:est )?pleine|buz[oó]n (?:est[aá] )?lleno|"
        r"casella (?:di posta )?(?:[eè] )?piena|mailbox (?:is )?vol\b|skrzynka (?:jest )?pe[lł]na|"
        r"邮箱(?:空间)?已满|邮箱容量|信箱已满|メールボックス(?:が|の容量が)?(?:一杯|満杯|いっぱい)|容量(?:超過|オーバー)",
    ),
    (
        R.MESGTOOBIG,
        r"(?:message|mail|file|attachment)s? (?:is |was )?too (?:big|large)|message size exceeds|size limit",
    ),
    (
        R.MESGTOOBIG,
        r"exceeds? (?:the )?(?:maximum )?(?:message )?size|message length exceeds|larger than.{0,30}limit",
    ),
    (R.MESGTOOBIG, r"message (?:size|length) .{0,30}exceed|size .{0,20}exceeds"),
    # "553 Exceeded maximum inbound message size".
    (
        R.MESGTOOBIG,
        r"exceed(?:s|ed)? (?:the )?maximum (?:inbound |incoming |allowed )?(?:message |e-?mail )?size",
    ),
    (
        R.SUSPEND,
        r"(?:account|mailbox|user|address)(?: has| is|s)? (?:been |currently |temporarily )?"
        r"(?:disabled|suspended|deactivated|discontinued|inactive|locked|frozen|"
        r"blocked by (?:the )?administrator)",
    ),
    (
        R.SUSPEND,
        r"\b(?:disabled|suspended|inactive|deactivated|discontinued|expired) (?:account|mailbox|user)",
    ),
    (
        R.SUSPEND,
        r"mailbox (?:unavailable|not available) for now|not active|is no longer active|account expired",
    ),
    (R.NORELAYING, r"relay(?:ing)? (?:access )?(?:denied|not permitted|not allowed|prohibited)"),
    (
        R.NORELAYING,
        r"(?:unable|not permitted|not allowed|cannot|can't) (?:to )?relay|we do not relay|no relaying",
    ),
    (R.NORELAYING, r"not (?:a )?(?:local|our) (?:domain|host)|relay not|open relay"),
    (R.AUTHFAILURE, r"\bdmarc\b|\bspf\b|\bdkim\b|sender policy framework|domainkeys"),
    (
        R.BLOCKED,
        r"black ?list|block ?list|\bdnsbl\b|\brbl\b|spamhaus|spamcop|sorbs|barracudacentral|"
        r"(?<!not )listed (?:at|in|on|by)|uceprotect|spam ?rats|\bcbl\b|\bpbl\b|\bsbl\b|\bxbl\b",
    ),
    (
        R.BLOCKED,
        r"reverse (?:dns|lookup)|\bptr\b|rdns|no (?:reverse|rdns)|hostname .{0,40}(?:does not|"
        r"doesn't) resolve",
    ),
    (
        R.BLOCKED,
        r"\b(?:ip|client|network|sending (?:host|server|ip))\b.{0,40}"
        r"(?:blocked|banned|refused|denied|rejected)|reputation",
    ),
    (
        R.BLOCKED,
        r"client host rejected|access denied.{0,20}(?:ip|host|client)|not allowed to send|"
        r"too many (?:bad|invalid)|blocked using|(?:was|been|is|are) blocked|\bbanned\b",
    ),
    (
        R.SPAMDETECTED,
        r"\bspam\b|junk ?mail|unsolicited|\bspammy|content (?:looks|seems) like|"
        r"bulk mail|considered as spam|classified as spam|detected as spam|marked as spam|\buce\b",
    ),
    (
        R.TOOMANYCONN,
        r"too many (?:connections|sessions|concurrent)|connection (?:rate|limit)|"
        r"rate limit|ratelimit|rate of|throttl|too fast|sending (?:rate|limit)|"
        r"try (?:again )?later.{0,20}(?:rate|limit)",
    ),
    (R.EXCEEDLIMIT, r"too many recipients|recipient limit|exceeded .{0,30}limit|limit exceeded"),
    (
        R.SYSTEMFULL,
        r"insufficient system storage|(?:disk|file ?system|system) (?:is )?full|out of (?:disk|storage)",
    ),
    (
        R.EXPIRED,
        r"(?:have|has) been failing for a long time|did not accept our requests to connect|"
        r"delivery failed \d+ attempts|not been collected after|failed after \d+ (?:attempts|days|hours)",
    ),
    (
        R.EXPIRED,
        r"retry time(?:out)? (?:not reached|exceeded)|(?:message|delivery) (?:has )?expired|"
        r"could not be delivered (?:with)?in|gave up|giving up|retry timeout|delivery time expired|"
        r"has not been delivered|unable to deliver .{0,60}after|not (?:been )?delivered for|"
        r"time ?out exceeded|"
        r"queue ?time|too long in (?:the )?queue|maximum (?:delivery )?time",
    ),
)

# "Recipient address rejected:" followed by words is Postfix's prefix for every recipient restriction
# (user unknown, mailbox full, policy, spam ...): the words after it decide. Rejected with nothing more
# ("550 #5.1.0 Address rejected.") it is the address itself.
ADDRESS: tuple[tuple[Reason, str], ...] = (
    (R.USERUNKNOWN, r"address rejected(?:\.|\s*$|\s*\(|\s*\[)"),
    (
        R.HASMOVED,
        r"has moved|user not local; please try|address (?:has )?changed|no longer (?:at|with)|"
        r"new (?:e-?mail )?address is",
    ),
    (
        R.HOSTUNKNOWN,
        r"host (?:or domain name )?(?:unknown|not found)|unknown (?:host|domain)|"
        r"domain (?:name )?(?:not found|does not exist|doesn't exist|unknown|is invalid)|no such (?:host|"
        r"domain)|"
        r"name or service not known|unrout(?:e)?able (?:mail )?domain|host not found|nxdomain|"
        r"no (?:valid )?mx|mx (?:record|lookup)|dns (?:error|failure|lookup)|non-?existent (?:domain|host)|"
        r"(?:domain|host)(?: name)? lookup fail|could not be resolved|unknown mail domain|"
        r"domain .{0,40}not exist|domain is not reachable",
    ),
    (
        R.HOSTUNKNOWN,
        r"domaine (?:inconnu|inexistant)|dominio (?:desconocido|inexistente|sconosciuto)|域名不存在|"
        r"ドメインが(?:存在しません|見つかりません)",
    ),
    # "553 neko.example.com does not exist": a host name, not an address, does not exist.
    (R.HOSTUNKNOWN, r"(?<![@\w.-])(?:[\w-]+\.)+[a-z]{2,}\]?:? (?:does not exist|doesn't exist|not found)"),
    (R.NOTACCEPT, r"(?:does not|doesn't|do not|not) accept(?:ing)? (?:any )?(?:e-?)?mail|null mx"),
    # "Please check if address is correct", "did not exactly match an LLNL email address", "does not
    # have a final email delivery point": the sender is told the address itself is wrong.
    (
        R.USERUNKNOWN,
        r"(?:check|verify) (?:if |that |whether )?(?:the )?(?:recipient'?s? )?(?:e-?mail )?address(?:es)? "
        r"(?:is |are )?(?:correct|valid|spelled)|did not (?:exactly )?match (?:an? |any )?.{0,30}address|"
        r"does not have a final (?:e-?mail )?delivery point",
    ),
    (
        R.USERUNKNOWN,
        r"(?:recipient|user) ?(?:name|id)? is not recognized|invalid (?:final )?delivery userid|"
        r"n'existe pas|no existe|existiert nicht|non esiste|(?:address|recipient|user|mailbox) (?:wasn.t|"
        r"was not) found",
    ),
    # "User unknown" in the languages providers answer in when no English follows.
    (
        R.USERUNKNOWN,
        r"(?:utilisateur|destinataire|adresse) (?:de messagerie )?inconnue?|"
        r"(?:usuario|destinatario) (?:desconocido|inexistente)|(?:utente|destinatario) (?:sconosciuto|"
        r"inesistente)|(?:gebruiker|ontvanger) (?:onbekend|bestaat niet)|onbekende (?:gebruiker|ontvanger)|"
        r"(?:nieznany|nie ma takiego) u[zż]ytkownik|u[zż]ytkownik nieznany|benutzer (?:ist )?unbekannt|"
        r"unbekannte[rn]? (?:benutzer|empf[äa]nger)|"
        r"用户不存在|收件人不存在|邮箱不存在|用户名不存在|宛先不明|宛先が(?:みつかり|見つかり)ません|"
        r"存在しない(?:ユーザ|アドレス|メールアドレス)",
    ),
    (
        R.USERUNKNOWN,
        r"user(?:name)? (?:is )?(?:unknown|not found|doesn't exist|does not exist|not exist)|"
        r"unknown (?:user|recipient|local ?part|mailbox|address|alias)|no such (?:user|mailbox|recipient|"
        r"address|account|local user|person)|recipient (?:unknown|not found|does not exist|invalid)|"
        r"invalid (?:recipient|mailbox|address|user)|(?:mailbox|account|address|recipient|user|e-?mail)s? "
        r"(?:name )?(?:does not|doesn't|not|did not) exist|not a (?:valid|known) (?:user|mailbox|recipient)|"
        r"mailbox (?:not found|unavailable|is unavailable|does not exist|name not allowed|not exist)|"
        r"no mailbox|unrout(?:e)?able address|address (?:unknown|not found|invalid|does not exist)|"
        r"bad (?:destination )?(?:recipient|mailbox|address)|not our customer|no account|"
        r"(?:user|recipient|mailbox|account) not (?:found|known|valid)|undeliverable address|"
        r"is not a (?:valid|known)|(?:unknown|illegal) alias|addressee unknown|no such (?:e-?mail )?address|"
        r"not listed in|(?:user|recipient) .{0,30}(?:unknown|doesn't exist|does not exist)|"
        r"nosuchuser|recipnotfound|unknown or illegal|no valid recipient|not have an? .{0,30}account|"
        r"don't have an? .{0,30}account|doesn't have an? .{0,30}account|unknown.{0,10}recipient|"
        r"no longer (?:valid|available|in use|exists)|not a valid (?:e-?mail )?address|invalid e-?mail|"
        r"is not (?:a )?valid|mailbox is not|account .{0,30}(?:not exist|unknown)",
    ),
)

WEAK: tuple[tuple[Reason, str], ...] = (
    (R.SPAMDETECTED, r"content (?:filter|rejected)|message (?:content )?rejected|looks like spam"),
    (R.FILTERED, r"\bfilter(?:ed)?\b|(?<!connection )refused by|rejected by (?:the )?recipient"),
    (R.POLICYVIOLATION, r"\bpolicy\b|policies|not (?:authori[sz]ed|permitted|allowed)|prohibited"),
    (
        R.SECURITYERROR,
        r"smtp auth|authentication required|must authenticate|auth(?:entication)? (?:is )?required",
    ),
    (R.SYNTAXERROR, r"command parameter not implemented|parameter not (?:recognized|implemented)"),
    (R.SECURITYERROR, r"\btls\b|starttls|certificate|encrypt|authentication required|must authenticate"),
    (
        R.REJECTED,
        r"sender (?:address )?(?:rejected|denied|verify|refused|domain)|domain of sender|"
        r"envelope sender|mail from|sender .{0,40}(?:not|invalid)",
    ),
    (
        R.NETWORKERROR,
        r"connection (?:refused|timed out|reset|closed|lost)|timed? ?out|network is unreachable|"
        r"no route to host|lost connection|mail loop|routing loop|too many hops|loops? back|"
        r"could not connect|"
        r"unable to connect|can't connect|connect to .{0,60}failed|"
        # A gateway's routing failure ("Routing: Could not find a gateway for a@b"): no path to the
        # domain's mail system today, nothing about the address.
        r"could not find a (?:gateway|route)",
    ),
    (R.MAILERERROR, r"mailer|command (?:died|failed)|exit (?:status|code)|procmail|pipe to|\bcommand output"),
    (R.SYNTAXERROR, r"syntax error|command unrecognized|unrecognized command|bad sequence|invalid command"),
    (R.CONTENTERROR, r"\bmime\b|content|header|8-?bit|encoding|rfc ?(?:2)?822|line (?:too )?long"),
    (
        R.SYSTEMERROR,
        r"system error|internal error|server error|local error|temporar(?:y|ily)|try again|"
        r"i/o error|resources|encountered an error while (?:being )?process",
    ),
    (R.BLOCKED, r"\bblock|denied|refused"),
    (R.REJECTED, r"rejected|reject"),
)
