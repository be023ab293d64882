#!/usr/bin/env bash
# Interop suite: real Postfix and Dovecot behind mailveil on loopback, real
# clients (swaks, curl, Python smtplib, neomutt) in front of it. Installs what
# it needs with apt (needs root), is idempotent, and cleans up after itself.
#
# Layout (all on loopback, nothing leaves the machine):
#   clients (from 127.0.0.77) → mailveil 127.0.0.1:11465 (TLS) / :11587 (STARTTLS)
#     → Postfix submission 127.0.0.2:10465 (TLS) → LMTP → Dovecot Maildir
#   Postfix 127.0.0.2:10025 offers AUTH but no TLS: mailveil must refuse it.
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

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/interop/run.sh needs root (apt-get, postfix, dovecot)" >&2
    exit 2
fi

# ------------------------------------------------------------------ install
need_install=0
for bin in postfix dovecot swaks curl neomutt mbsync openssl python3; do
    command -v "$bin" >/dev/null 2>&1 || need_install=1
done
perl -MNet::SSLeay -MIO::Socket::INET6 -MAuthen::SASL -e1 2>/dev/null || need_install=1
if [ "$need_install" = 1 ]; then
    log "installing Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q >/dev/null
    apt-get install -y -q dovecot-imapd dovecot-lmtpd postfix openssl ca-certificates curl swaks \
        libnet-ssleay-perl libio-socket-inet6-perl libauthen-sasl-perl isync neomutt python3 >/dev/null
fi
id vmail >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin vmail

# ------------------------------------------------------------------ clean slate
stop_all() {
    [ -f "$W/mailveil.pid" ] && kill "$(cat "$W/mailveil.pid")" 2>/dev/null || true
    [ -d "$W/postfix" ] && postfix -c "$W/postfix" stop >/dev/null 2>&1 || true
    [ -f "$W/dovecot/dovecot.conf" ] && dovecot -c "$W/dovecot/dovecot.conf" stop >/dev/null 2>&1 || true
    sleep 0.3
}
stop_all
rm -rf "$W"
mkdir -p "$W"/{tls,log,dovecot,postfix,mail,msgs}
trap 'stop_all' EXIT

# ------------------------------------------------------------------ build
log "building mailveil (release)"
(cd "$REPO" && cargo build --release --locked --quiet)
MAILVEIL="$REPO/target/release/mailveil"

# ------------------------------------------------------------------ TLS
# A private CA and one leaf for every server here (rustls, like browsers,
# refuses a CA certificate used as a server's own certificate).
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mailveil interop CA" \
    -keyout "$W/tls/ca-key.pem" -out "$W/tls/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$W/tls/key.pem" -out "$W/tls/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:127.0.0.2,IP:::1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$W/tls/leaf.ext"
openssl x509 -req -in "$W/tls/leaf.csr" -CA "$W/tls/ca.pem" -CAkey "$W/tls/ca-key.pem" -CAcreateserial \
    -days 3650 -extfile "$W/tls/leaf.ext" -out "$W/tls/cert.pem" 2>/dev/null
chmod 644 "$W/tls/key.pem"
CA="$W/tls/ca.pem"

# ------------------------------------------------------------------ Dovecot
sed "s#@W@#$W#g" "$HERE/dovecot.conf.in" > "$W/dovecot/dovecot.conf"
printf 'alice:{PLAIN}alice-pw\nbob:{PLAIN}bob-pw\n' > "$W/dovecot/users"
chown -R vmail:vmail "$W/mail"
dovecot -c "$W/dovecot/dovecot.conf"

# ------------------------------------------------------------------ Postfix
mkdir -p "$W/postfix/spool" "$W/postfix/data"
sed "s#@W@#$W#g" "$HERE/postfix-main.cf.in" > "$W/postfix/main.cf"
cp "$HERE/postfix-master.cf" "$W/postfix/master.cf"
chown postfix "$W/postfix/data"
postfix -c "$W/postfix" check >/dev/null 2>&1 || true
postfix -c "$W/postfix" start >/dev/null

# ------------------------------------------------------------------ mailveil
sed "s#@W@#$W#g" "$HERE/mailveil.toml.in" > "$W/mailveil.toml"
"$MAILVEIL" check --config "$W/mailveil.toml" >/dev/null
"$MAILVEIL" run --config "$W/mailveil.toml" >"$W/log/mailveil.out" 2>"$W/log/mailveil.err" &
echo $! > "$W/mailveil.pid"

wait_port() { # host port
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1:$2 did not open" >&2
    return 1
}
wait_port 127.0.0.1 10993; wait_port 127.0.0.2 10465; wait_port 127.0.0.2 10025
wait_port 127.0.0.1 11465; wait_port 127.0.0.1 11587

# ------------------------------------------------------------------ clients
export W CA REPO
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
