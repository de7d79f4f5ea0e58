#!/usr/bin/env bash
# Unpack Debian's Exim 4.96 binary into a private folder for the tests (never installed as the system MTA).
# Prints the path of the exim4 binary. Idempotent: quick when unpacked.
#   EXIM_ROOT  where to unpack (default: var/mta/exim4 in the repository, which git ignores)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${EXIM_ROOT:-$repo/var/mta/exim4}
bin=$dest/usr/sbin/exim4

if [ ! -x "$bin" ]; then
    work=$(mktemp -d)
    chmod 755 "$work"  # apt runs downloads as _apt when it can
    trap 'rm -rf "$work"' EXIT
    # apt-get download needs no root; it fetches the .debs the machine's apt sources name (Debian 12: 4.96).
    (cd "$work" && apt-get download -q exim4-daemon-light exim4-base exim4-config >&2) || {
        [ "$(id -u)" = 0 ] || { echo "exim-unpack: apt-get download failed (try as root: apt-get update)" >&2; exit 1; }
        apt-get update -qq >&2
        (cd "$work" && apt-get download -q exim4-daemon-light exim4-base exim4-config >&2)
    }
    mkdir -p "$dest"
    for deb in "$work"/*.deb; do dpkg -x "$deb" "$dest"; done
    # dpkg -x keeps setuid/setgid bits: a private copy must not carry them.
    find "$dest" -perm /6000 -type f -exec chmod ug-s {} +
fi

# Exim refuses to run deliveries as root and switches to its user: Debian's binary is built for Debian-exim.
if [ "$(id -u)" = 0 ] && ! getent passwd Debian-exim >/dev/null; then
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin Debian-exim
fi

echo "$bin"
