#!/usr/bin/env bash
# Delta Chat (the real core, deltachat-rpc-server and -client 2.65.0 from
# PyPI, in a venv) through mailveil, against the suite's Postfix and Dovecot:
# two accounts, a Secure-Join, an encrypted 1:1 message, a quoted reply, a
# reaction, a 2 MB attachment, a group, no duplicates (in the chats and at
# Postfix). Once with the default header policy, once with [sanitize] mode =
# "strict", and once at the chatmail-style provider address (Dovecot offers
# XCHATMAIL and XDELTAPUSH there; the relay passes the first), and once
# with [policy] outgoing = "encrypted-only" (the Secure-Join steps pass as
# exempt ones, everything after them is encrypted), members only, and the
# accounts set up from `mailveil client-config --format dclogin` codes,
# which the core's own check_qr reads first. Whether the core took
# the provider for a chatmail server is not visible through its RPC API
# (2.65). Needs root (sets up like run.sh).
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

# Each message Delta Chat sent, as Postfix received it from the relay: no
# Message-ID twice since line $1 of Postfix's log (the core hides duplicates
# from its own chat list, so this is counted at the provider).
no_duplicate_submissions() { # first-line
    tail -n "+$1" "$W/log/postfix.log" | grep -o 'cleanup\[[0-9]*\]: [0-9A-F]*: message-id=<[^>]*>' |
        sed 's/.*message-id=//' | sort | uniq -d | grep -q . && return 1
    [ "$(tail -n "+$1" "$W/log/postfix.log" | grep -c 'cleanup\[[0-9]*\]: [0-9A-F]*: message-id=')" -ge 6 ]
}

for mode in default strict chatmail encrypted; do
    export DC_DOMAIN=example.test
    if [ "$mode" = encrypted ]; then
        stop_mailveil
        render_config
        printf '\n[policy]\noutgoing = "encrypted-only"\n' >> "$W/mailveil.toml"
        # The collective's relay: members only as well (alice and bob, by
        # `mailveil access add`), and the accounts configured from the
        # dclogin: codes `mailveil client-config` prints.
        head -c 32 /dev/urandom > "$W/dc-access-key"
        for member in alice@example.test bob@example.test; do
            printf '%s\n' "$member" | "$MAILVEIL" access add --secret "$W/dc-access-key" 2>/dev/null
        done > "$W/dc-members"
        printf '\n[access]\nlist = "%s"\nsecret_file = "%s"\n' "$W/dc-members" "$W/dc-access-key" >> "$W/mailveil.toml"
        export DC_FROM_QR="$MAILVEIL"
        start_mailveil
        check "the relay sends encrypted mail only (check says so, and a plain message gets 550 5.7.1)" \
            sh -c '"$MAILVEIL" check --config "$W/mailveil.toml" | grep -q "^upstream provider: .*outgoing: encrypted only" &&
                   swaks -s 127.0.0.1:11465 --tlsc --tls-verify --tls-ca-path "$CA" -a PLAIN \
                       -au alice@example.test -ap alice-pw -f alice@example.test -t bob@example.test \
                       --h-Subject dc-plain-probe > "$W/log/dc-plain.out" 2>&1;
                   grep -q "550 5.7.1 Not sent" "$W/log/dc-plain.out"'
    fi
    if [ "$mode" = chatmail ]; then
        # Default headers again, at the provider that offers XCHATMAIL and
        # XDELTAPUSH: the real core meets the relay's filtering of them.
        stop_mailveil
        render_config
        start_mailveil
        export DC_DOMAIN=ext.test
    fi
    if [ "$mode" = strict ]; then
        stop_mailveil
        printf '\n[sanitize]\nmode = "strict"\n' >> "$W/mailveil.toml"
        start_mailveil
        check "the relay runs in strict mode" \
            sh -c '"$MAILVEIL" check --config "$W/mailveil.toml" | grep -q "^sanitize: Strict"'
        # And both accounts use the one port that serves IMAP and SMTP by ALPN.
        export DC_ONE_PORT=11443
    else
        unset DC_ONE_PORT
    fi
    log "Delta Chat through mailveil ($mode)"
    first=$(( $(wc -l < "$W/log/postfix.log") + 1 ))
    check "Delta Chat ($mode${DC_ONE_PORT:+, IMAP and SMTP both on port $DC_ONE_PORT}): two accounts, Secure-Join, encrypted 1:1, quoted reply, reaction, 2 MB attachment, group, no duplicates" \
        timeout 600 "$VENV/bin/python" "$HERE/deltachat.py" "$mode"
    check "Delta Chat ($mode): Postfix received each of its messages once (by Message-ID)" \
        no_duplicate_submissions "$first"
done

echo
echo "deltachat: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
