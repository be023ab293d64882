#!/usr/bin/env bash
# Delta Chat (the real core, deltachat-rpc-server and -client 2.65.0 from
# PyPI, in a venv) through mailveil, against the suite's Postfix and Dovecot:
# two accounts, a Secure-Join, an encrypted 1:1 message, a quoted reply, a reaction, a 2 MB
# attachment, a group, no duplicates. Once with the default header policy,
# once with [sanitize] mode = "strict". Needs root (sets up like run.sh).
#
# Prints one line per check and a closing "deltachat: N passed, N failed".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"
DC_VERSION=2.65.0

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"
trap 'stop_all' EXIT

VENV="${DELTACHAT_VENV:-/var/tmp/mailveil-deltachat-$DC_VERSION}"
if ! [ -x "$VENV/bin/deltachat-rpc-server" ]; then
    log "installing deltachat-rpc-server and deltachat-rpc-client $DC_VERSION in $VENV"
    command -v /usr/bin/python3 >/dev/null && /usr/bin/python3 -m venv --help >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
    }
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "deltachat-rpc-server==$DC_VERSION" "deltachat-rpc-client==$DC_VERSION"
fi
export PATH="$VENV/bin:$PATH"

for mode in default strict; do
    if [ "$mode" = strict ]; then
        stop_mailveil
        printf '\n[sanitize]\nmode = "strict"\n' >> "$W/mailveil.toml"
        start_mailveil
    fi
    log "Delta Chat through mailveil, [sanitize] mode = \"$mode\""
    check "Delta Chat ($mode): two accounts, Secure-Join, encrypted 1:1, quoted reply, reaction, 2 MB attachment, group, no duplicates" \
        timeout 600 "$VENV/bin/python" "$HERE/deltachat.py" "$mode"
done

echo
echo "deltachat: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
