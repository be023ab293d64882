#!/usr/bin/env bash
# Interop suite: real Postfix and Dovecot behind mailveil on loopback, real
# clients (swaks, curl, Python smtplib, neomutt) in front of it. Installs what
# it needs with apt (needs root), is idempotent, and cleans up after itself.
# Set-up (servers, CA, mailveil) is in lib.sh. Clients send from 127.0.0.77
# so that any trace of the client's address upstream can be found.
#
# Prints one line per check and a closing "interop: N passed, N failed".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"
PASS=0
FAIL=0

log() { printf '== %s\n' "$*"; }
ok() { PASS=$((PASS + 1)); printf 'ok   - %s\n' "$1"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL - %s\n' "$1"; }
check() { # check "name" command...
    local name="$1"; shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"

# ------------------------------------------------------------------ clients
log "sending through mailveil with real clients"

check "swaks over STARTTLS from 127.0.0.77" \
    swaks -s 127.0.0.1:11587 --tls --tls-verify --tls-ca-path "$CA" -li 127.0.0.77 \
        -a PLAIN -au alice@example.test -ap alice-pw -f alice@example.test -t bob@example.test \
        --ehlo swaks-ehlo.invalid --h-Subject interop-swaks \
        --add-header "User-Agent: swaks-canary-agent" --add-header "X-Originating-IP: [192.0.2.77]" \
        --body "swaks body line" --silent 1

cat > "$W/msgs/curl.eml" <<'MSG'
From: Alice <alice@example.test>
To: bob@example.test
Subject: interop-curl
Date: Mon, 23 Nov 2026 23:10:00 +0100
Message-ID: <curl.1@curl-laptop.invalid>
User-Agent: curl-canary-agent
X-Mailer: curl-canary-mailer

curl body line
.dot line
MSG
sed -i 's/$/\r/' "$W/msgs/curl.eml"
check "curl over implicit TLS from 127.0.0.77" \
    curl -sS --ssl-reqd --cacert "$CA" --interface 127.0.0.77 \
        --url "smtps://127.0.0.1:11465/curl-ehlo.invalid" --user "alice@example.test:alice-pw" \
        --mail-from alice@example.test --mail-rcpt bob@example.test -T "$W/msgs/curl.eml"

check "Python smtplib: plain, PGP/MIME, S/MIME, SMTPUTF8, smuggling refused, plain-text upstream refused" \
    python3 "$HERE/smtp_clients.py"

cat > "$W/neomuttrc" <<RC
set from = "alice@example.test"
set realname = "Alice"
set smtp_url = "smtps://alice%40example.test@localhost:11465"
set smtp_pass = "alice-pw"
set ssl_ca_certificates_file = "$CA"
set ssl_verify_host = yes
set hostname = "neomutt-laptop.invalid"
set user_agent = yes
set record = ""
set copy = no
set use_envelope_from = yes
RC
check "neomutt batch send over implicit TLS" \
    sh -c 'echo "neomutt body line" | neomutt -n -F "$W/neomuttrc" -s interop-neomutt -- bob@example.test'

# ------------------------------------------------------------------ checks
log "reading back what the provider stored"
check "every message delivered once, identifying data gone, bodies identical" \
    python3 "$HERE/check_delivery.py"

check "provider accepted the SMTPUTF8 message relayed by mailveil" \
    sh -c 'grep -q "from=<jürgen@exämple.test>, size=" "$W/log/postfix.log"'
check "provider's own log never saw the client address 127.0.0.77" \
    sh -c '! grep -q "127\.0\.0\.77" "$W/log/postfix.log" "$W/log/dovecot.log"'
check "provider's log shows the relay authenticating over TLS (ESMTPSA)" \
    sh -c 'grep -q "sasl_method=PLAIN, sasl_username=alice@example.test" "$W/log/postfix.log"'
check "plain-text upstream was never sent AUTH" \
    sh -c 'grep -q "postfix/plainonly" "$W/log/postfix.log" && ! grep "postfix/plainonly" "$W/log/postfix.log" | grep -qi "sasl"'
check "mailveil printed no client data" \
    sh -c '! grep -Eq "127\.0\.0\.77|alice@|bob@|interop-|ehlo\.invalid|canary" "$W/log/mailveil.out" "$W/log/mailveil.err"'

echo
echo "interop: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
