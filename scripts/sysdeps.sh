#!/usr/bin/env bash
# Install the system packages bouncekeeper and its test suite need, on Debian, when we are root.
# Idempotent and quick when everything is present: it checks before it calls apt-get.
set -euo pipefail

# --runtime (`make install`): only what the installed bouncekeeper needs to be built and to run: no MTA,
# no Redis (use your own, or `apt-get install redis-server` for the embedded one), no test tools.
runtime=false
[ "${1:-}" = "--runtime" ] && runtime=true

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# python3-venv, python3-dev, libmilter-dev, gcc: the venv on Debian's Python and pymilter's C build.
runtime_pkgs=(python3-venv python3-dev libmilter-dev gcc)

# libmilter-dev: pymilter builds against it. redis-server: the embedded default store and the tests.
# postfix (+ smtp-sink/smtp-source), swaks, m4/libwrap0 (Sendmail), libidn12 (Exim): MTA tests.
# dovecot-imapd: the IMAP scanner's tests run a private Dovecot. chromium: the admin page's test clicks
# its button in a real headless browser. python3-venv, python3-dev: the venv is built on Debian's Python
# (the Makefile says why) and pymilter compiles against its headers. systemd: systemd-analyze verifies
# the units (tests/test_units.py; offline, nothing is started). python3-setuptools, python3-wheel: the
# package is built with Debian's own setuptools (tests/test_packaging.py). gcc: pymilter's build.
# redis-sentinel: the failover tests' sentinels (tests/support/redis_sentinel.py; redis-server --sentinel).
# php-cli, nodejs: the VERP reference signers in contrib/verp/ run against the specification (tests/test_verp_spec.py).
# prometheus: its promtool checks and unit-tests contrib/prometheus/'s alert rules (tests/test_contrib_monitoring.py).
rig_pkgs=(redis-server redis-sentinel postfix swaks m4 libwrap0 libidn12 procps dovecot-imapd chromium systemd python3-setuptools python3-wheel php-cli nodejs prometheus)
if $runtime; then wanted=("${runtime_pkgs[@]}"); else wanted=("${runtime_pkgs[@]}" "${rig_pkgs[@]}"); fi
for p in "${wanted[@]}"; do
    have_pkg "$p" || need+=("$p")
done

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "sysdeps: missing Debian packages: ${need[*]} (run as root, or install them yourself)" >&2
        exit 1
    fi
    echo "sysdeps: installing ${need[*]}"
    if ! $runtime; then
        # Postfix must not configure itself as the system MTA: we only use its binaries in private instances.
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Sendmail 8.17 for the Sendmail MTA tests: Debian's binary unpacked under .cache/sendmail, never
# installed as the system MTA (scripts/fetch-sendmail.sh; quick no-op when already there).
if [ "$(id -u)" = 0 ] && ! $runtime; then
    "$(dirname "$0")/fetch-sendmail.sh" >/dev/null
fi
