"""The adapters that run as daemons or timers: each translates the service's verdicts into one protocol
(milter, LMTP/SMTP, Postfix policy delegation, HTTP, IMAP, webhooks, probe mail, /metrics)."""
