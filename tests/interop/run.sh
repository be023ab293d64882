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

# ------------------------------------------------------------------ IMAP
log "reading and filing mail through mailveil's IMAP listeners"
imap() { python3 "$HERE/imap_clients.py" "$1"; }
check "imaplib: STARTTLS port shows LOGINDISABLED before TLS, greeting reveals nothing" imap prelogin
check "imaplib: Dovecot offers COMPRESS, mailveil hides and refuses it" imap compress
check "imaplib: wrong password gets the provider's NO [AUTHENTICATIONFAILED]; AUTHENTICATE PLAIN/LOGIN work" imap auth
check "imaplib: APPEND sanitized, SEARCH, FETCH byte-exact, STORE, MOVE, CONDSTORE" imap workflow
check "imaplib: IDLE announces new mail, DONE completes" imap idle
check "imaplib: ID answered" imap id
check "imaplib: 8 MB APPEND and FETCH intact" imap big

CURL_IMAP=(curl -sS --ssl-reqd --cacert "$CA" --interface 127.0.0.77 --user "alice@example.test:alice-pw")
check "curl lists mailboxes over implicit TLS" \
    sh -c '"$@" imaps://127.0.0.1:11993/ | grep -q "\\Sent"' _ "${CURL_IMAP[@]}"
printf 'From: Alice <alice@example.test>\r\nSubject: interop-curl-draft\r\nUser-Agent: curl-canary-agent\r\nMessage-ID: <d1@curl-laptop.invalid>\r\n\r\ncurl draft body\r\n' \
    > "$W/msgs/curl-draft.eml"
check "curl appends to Drafts over STARTTLS" \
    "${CURL_IMAP[@]}" -T "$W/msgs/curl-draft.eml" imap://127.0.0.1:11143/Drafts
check "curl fetches the draft back: body intact, User-Agent and Message-ID host gone" \
    sh -c 'got=$("$@" "imaps://127.0.0.1:11993/Drafts;UID=1") &&
           printf "%s" "$got" | grep -q "^curl draft body" &&
           ! printf "%s" "$got" | grep -Eqi "user-agent|curl-laptop"' _ "${CURL_IMAP[@]}"

mkdir -p "$W/mbsync/local"
cat > "$W/mbsyncrc" <<RC
IMAPAccount relay
# mbsync 1.4 matches host names only, not IP addresses, against the certificate.
Host localhost
Port 11993
User alice@example.test
Pass alice-pw
SSLType IMAPS
CertificateFile $CA

IMAPStore relay
Account relay

MaildirStore local
Path $W/mbsync/local/
Inbox $W/mbsync/local/INBOX
SubFolders Verbatim

Channel alice
Far :relay:
Near :local:
Patterns INBOX Drafts
Create Near
Sync All
SyncState *
RC
check "mbsync pulls INBOX and Drafts through mailveil" \
    sh -c 'mbsync -q -c "$W/mbsyncrc" -a && grep -rlq "^Subject: interop-curl-draft" "$W/mbsync/local/Drafts" &&
           grep -rlq "^Subject: interop-imap-" "$W/mbsync/local/INBOX"'
printf 'From: Alice <alice@example.test>\r\nSubject: interop-mbsync-push\r\nUser-Agent: mbsync-canary-agent\r\nMessage-ID: <m1@mbsync-laptop.invalid>\r\n\r\nmbsync body\r\n' \
    > "$W/mbsync/local/Drafts/new/1795500000.1.interop"
check "mbsync pushes a new draft through mailveil, sanitized" \
    sh -c 'mbsync -q -c "$W/mbsyncrc" -a &&
           f=$(grep -rl "^Subject: interop-mbsync-push" "$W/mail/alice/Maildir/.Drafts/cur" "$W/mail/alice/Maildir/.Drafts/new") &&
           [ "$(printf "%s\n" "$f" | wc -l)" = 1 ] && grep -q "^mbsync body" "$f" &&
           ! grep -Eqi "user-agent|mbsync-laptop" "$f"'

cp "$W/neomuttrc" "$W/neomuttrc-fcc"
cat >> "$W/neomuttrc-fcc" <<RC
set imap_user = "alice@example.test"
set imap_pass = "alice-pw"
set folder = "imaps://localhost:11993/"
set record = "+Sent"
set copy = yes
set editor = "true"
set fast_reply = yes
set abort_unmodified = no
set abort_noattach = no
set header_cache = ""
set message_cachedir = ""
RC
echo "neomutt body saved to Sent" > "$W/msgs/neomutt-fcc.txt"
check "neomutt sends and saves its Sent copy through mailveil (interactive, on a pty)" \
    python3 "$HERE/neomutt_fcc.py" "$W/neomuttrc-fcc" interop-fcc-neomutt "$W/msgs/neomutt-fcc.txt" bob@example.test
check "the Sent copy at the provider carries no identifying header" imap sent-copy

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
check "Dovecot saw every IMAP login from the relay's address, over TLS" \
    sh -c 'grep "imap-login: Info: Login: user=<alice@" "$W/log/dovecot.log" | grep -q "rip=127.0.0.1, lip=127.0.0.2" &&
           ! grep "imap-login: Info: Login:" "$W/log/dovecot.log" | grep -v "rip=127.0.0.1," | grep -q . &&
           ! grep "imap-login: Info: Login:" "$W/log/dovecot.log" | grep -vq "TLS"'
check "Dovecot received only the relay's generic ID, never the client's" \
    sh -c 'grep -q "ID sent: name=IMAP client" "$W/log/dovecot.log" && ! grep -Eq "canary|idclient" "$W/log/dovecot.log"'
check "mailveil printed no client data" \
    sh -c '! grep -Eq "127\.0\.0\.77|alice@|bob@|interop-|INBOX|Drafts|Archive|ehlo\.invalid|canary" "$W/log/mailveil.out" "$W/log/mailveil.err"'

echo
echo "interop: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
