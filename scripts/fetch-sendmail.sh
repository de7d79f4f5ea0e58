#!/usr/bin/env bash
# Unpack Debian's Sendmail 8.17 binaries into a folder, WITHOUT installing it as the system MTA.
# The Sendmail MTA tests (tests/mta/test_sendmail.py) run this binary on 127.0.0.1 from a private config.
# Usage: scripts/fetch-sendmail.sh [DEST]   (default: .cache/sendmail in the repository)
# Idempotent: does nothing when DEST already holds the sendmail binary. Needs apt (and root for the
# m4/libwrap0 dependencies, which scripts/sysdeps.sh installs).
set -euo pipefail

dest="${1:-$(cd "$(dirname "$0")/.." && pwd)/.cache/sendmail}"
binary="$dest/usr/libexec/sendmail/sendmail"
if [ -x "$binary" ]; then
    echo "$dest"
    exit 0
fi
work="$(mktemp -d)"
chmod 755 "$work"  # apt downloads as the _apt user
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt-get download needs the package lists; refresh them only when the packages are unknown.
if ! apt-cache show sendmail-bin >/dev/null 2>&1; then
    apt-get update -qq
fi
apt-get download -qq sendmail-bin sendmail-base sendmail-cf >/dev/null
mkdir -p "$dest"
for deb in ./*.deb; do
    dpkg -x "$deb" "$dest"
done
# dpkg -x keeps setuid/setgid bits: strip them, this copy must never run privileged by accident.
find "$dest" -perm /6000 -type f -exec chmod ug-s {} +
echo "$dest"
