#!/usr/bin/env bash
# The suite from a checkout in a folder only root may enter: a clone of this checkout's HEAD under
# `mktemp -d` (mode 0700), as a checkout in root's home would be. The Exim and privilege-drop tests run
# programs as other users (Debian-exim, nobody); tests/support/reachable.py makes that work from there.
#   scripts/test-private-checkout.sh                      # the whole suite
#   scripts/test-private-checkout.sh tests/mta/test_exim_verp.py -x
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
private=$(mktemp -d)
trap 'rm -rf "$private"' EXIT
[ "$(stat -c %a "$private")" = 700 ] || { echo "mktemp -d did not give a mode 0700 folder" >&2; exit 1; }
git clone -q "$repo" "$private/bouncekeeper"
cd "$private/bouncekeeper"
make venv >/dev/null
if [ $# -eq 0 ]; then set -- tests; fi
.venv/bin/pytest -q -p no:cacheprovider "$@"
