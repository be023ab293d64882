#!/usr/bin/env bash
# Shared set-up for the interop suite and benchmarks: installs Debian
# packages, makes a private CA, starts Dovecot, Postfix and mailveil on
# loopback under $W. Sourced by every script here; expects HERE, REPO, W.
#
# Layout (all on loopback, nothing leaves the machine):
#   SMTP clients → mailveil 127.0.0.1:11465 (TLS) / :11587 (STARTTLS)
#     → Postfix submission 127.0.0.2:10465 (TLS) / :10587 (STARTTLS)
#     → LMTP → Dovecot Maildir
#   IMAP clients → mailveil 127.0.0.1:11993 (TLS) / :11143 (STARTTLS)
#     → Dovecot 127.0.0.2:10993 (TLS) / :10143 (STARTTLS)
#   Postfix 127.0.0.2:10025 offers AUTH but no TLS: mailveil must refuse it.
#
# Environment: MAILVEIL_INTEROP_DIR (the scripts' $W), MAILVEIL_BIN (run this
# mailveil binary instead of building target/release/mailveil).

# ------------------------------------------------------------------ reporting
# One definition for every script that sources this file (before the first
# use below). Scripts count with ok/bad/check and close with
# "NAME: $PASS passed, $FAIL failed".
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
for bin in postfix dovecot swaks curl msmtp neomutt mbsync openssl python3 tor microsocks tcpdump strace setpriv prlimit haproxy torsocks; do
    command -v "$bin" >/dev/null 2>&1 || need_install=1
done
perl -MNet::SSLeay -MIO::Socket::INET6 -MAuthen::SASL -e1 2>/dev/null || need_install=1
/usr/bin/python3 -c 'import dkim' 2>/dev/null || need_install=1
command -v zbarimg >/dev/null 2>&1 || need_install=1
if [ "$need_install" = 1 ]; then
    log "installing Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q >/dev/null
    # Install only: no package may start its service (a system tor would
    # connect to the public Tor network).
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
    fi
    apt-get install -y -q dovecot-imapd dovecot-lmtpd postfix openssl ca-certificates curl swaks \
        libnet-ssleay-perl libio-socket-inet6-perl libauthen-sasl-perl isync neomutt msmtp python3 \
        tor microsocks tcpdump strace util-linux python3-dkim zbar-tools haproxy torsocks >/dev/null
    if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
id vmail >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin vmail

# ------------------------------------------------------------------ clean slate
stop_all() {
    [ -f "$W/mailveil.pid" ] && kill "$(cat "$W/mailveil.pid")" 2>/dev/null || true
    [ -f "$W/baseline.pid" ] && kill "$(cat "$W/baseline.pid")" 2>/dev/null || true
    [ -f "$W/introspect.pid" ] && kill "$(cat "$W/introspect.pid")" 2>/dev/null || true
    [ -f "$W/flights.pid" ] && kill "$(cat "$W/flights.pid")" 2>/dev/null || true
    [ -f "$W/haproxy-bench.pid" ] && kill "$(cat "$W/haproxy-bench.pid")" 2>/dev/null || true
    [ -d "$W/postfix" ] && postfix -c "$W/postfix" stop >/dev/null 2>&1 || true
    [ -f "$W/dovecot/dovecot.conf" ] && dovecot -c "$W/dovecot/dovecot.conf" stop >/dev/null 2>&1 || true
    sleep 0.3
}
stop_all
rm -rf "$W"
mkdir -p "$W"/{tls,log,dovecot,postfix,mail,msgs}
trap 'stop_all' EXIT

# ------------------------------------------------------------------ build
if [ -n "${MAILVEIL_BIN:-}" ]; then
    log "using the mailveil binary $MAILVEIL_BIN (not building)"
else
    log "building mailveil (release)"
    (cd "$REPO" && cargo build --release --locked --quiet)
fi
MAILVEIL="${MAILVEIL_BIN:-$REPO/target/release/mailveil}"

# ------------------------------------------------------------------ TLS
# A private CA and one leaf for every server here (rustls, like browsers,
# refuses a CA certificate used as a server's own certificate). ECDSA P-256,
# as certbot issues by default and as the relay's own ephemeral certificate;
# CERT_KEY=rsa makes them RSA 2048 (to compare handshake costs, BENCHMARKS.md).
# One RSA leaf is made either way: the relay's STARTTLS SMTP listener
# (11587) serves it, so RSA keeps being tested.
CERT_KEY="${CERT_KEY:-ec}"
key_options() { # ec | rsa
    if [ "$1" = rsa ]; then echo "-newkey rsa:2048"; else echo "-newkey ec -pkeyopt ec_paramgen_curve:P-256"; fi
}
# shellcheck disable=SC2046 # the key options are words
openssl req -x509 $(key_options "$CERT_KEY") -nodes -days 3650 -subj "/CN=mailveil interop CA" \
    -keyout "$W/tls/ca-key.pem" -out "$W/tls/ca.pem" 2>/dev/null
# shellcheck disable=SC2046
openssl req $(key_options "$CERT_KEY") -nodes -subj "/CN=localhost" \
    -keyout "$W/tls/key.pem" -out "$W/tls/leaf.csr" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$W/tls/rsa-key.pem" -out "$W/tls/rsa-leaf.csr" 2>/dev/null
# The leaf is shaped like a public CA's (90 days, a CRL address) so that
# testssl.sh rates mailveil's TLS, not the test certificate; the CRL address
# is never fetched.
printf 'subjectAltName=DNS:localhost,DNS:mail.provider.test,IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,IP:::1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\ncrlDistributionPoints=URI:http://127.0.0.1:9/ca.crl\n' > "$W/tls/leaf.ext"
for leaf in "" rsa-; do
    openssl x509 -req -in "$W/tls/${leaf}leaf.csr" -CA "$W/tls/ca.pem" -CAkey "$W/tls/ca-key.pem" \
        -CAcreateserial -days 90 -extfile "$W/tls/leaf.ext" -out "$W/tls/${leaf}cert.pem" 2>/dev/null
done
chmod 644 "$W/tls/key.pem" "$W/tls/rsa-key.pem"
CA="$W/tls/ca.pem"
# A self-hosted provider's certificate made the usual way (`openssl req
# -x509`: self-signed, CA:TRUE), served by Dovecot on 127.0.0.4; and another
# key, whose pin must not open it. The pins are computed here with openssl,
# independently of mailveil.
for name in selfhosted other; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
        -subj "/CN=mail.$name.test" -addext "subjectAltName=DNS:mail.$name.test" \
        -keyout "$W/tls/$name-key.pem" -out "$W/tls/$name.pem" 2>/dev/null
done
chmod 644 "$W/tls/selfhosted-key.pem"
pin_of() { # certificate.pem
    openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform der |
        openssl dgst -sha256 -binary | base64
}
SELFHOSTED_PIN="$(pin_of "$W/tls/selfhosted.pem")"
OTHER_PIN="$(pin_of "$W/tls/other.pem")"

# ------------------------------------------------------------------ Dovecot
sed "s#@W@#$W#g" "$HERE/dovecot.conf.in" > "$W/dovecot/dovecot.conf"
# run.sh reads what arrived in OAUTHBEARER (the relay rewrites host= and
# port=) from the auth log: test secrets only. Off for the other scripts,
# whose counts of log lines and timings it would change.
if [ "${DOVECOT_AUTH_DEBUG:-0}" = 1 ]; then
    printf 'auth_debug = yes\nauth_debug_passwords = yes\n' >> "$W/dovecot/dovecot.conf"
fi
printf 'alice:{PLAIN}alice-pw\nbob:{PLAIN}bob-pw\n' > "$W/dovecot/users"
chown -R vmail:vmail "$W/mail"
# Bearer tokens (OAUTHBEARER, XOAUTH2) are checked by a local introspection
# endpoint; only alice@ext.test has one.
cat > "$W/dovecot/oauth2.conf" <<OAUTH
introspection_mode = post
introspection_url = http://127.0.0.1:10081/introspect
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
OAUTH
python3 "$HERE/oauth_introspect.py" 10081 & echo $! > "$W/introspect.pid"
dovecot -c "$W/dovecot/dovecot.conf"

# ------------------------------------------------------------------ Postfix
mkdir -p "$W/postfix/spool" "$W/postfix/data"
sed "s#@W@#$W#g" "$HERE/postfix-main.cf.in" > "$W/postfix/main.cf"
cp "$HERE/postfix-master.cf" "$W/postfix/master.cf"
chown postfix "$W/postfix/data"
postfix -c "$W/postfix" check >/dev/null 2>&1 || true
postfix -c "$W/postfix" start >/dev/null

# ------------------------------------------------------------------ mailveil
# The interop config, rendered afresh (scripts that change it start over).
render_config() {
    sed -e "s#@W@#$W#g" -e "s#@SELFHOSTED_PIN@#$SELFHOSTED_PIN#" -e "s#@OTHER_PIN@#$OTHER_PIN#" \
        "$HERE/mailveil.toml.in" > "$W/mailveil.toml"
}
render_config
"$MAILVEIL" check --config "$W/mailveil.toml" >/dev/null

start_mailveil() {
    "$MAILVEIL" run --config "$W/mailveil.toml" >"$W/log/mailveil.out" 2>"$W/log/mailveil.err" &
    echo $! > "$W/mailveil.pid"
    wait_port 127.0.0.1 11465
    wait_port 127.0.0.1 11587
    wait_port 127.0.0.1 11993
    wait_port 127.0.0.1 11143
    wait_port 127.0.0.1 11443
}

# Stops the process named in pid file $1 (if any), waits up to 5 s for it
# to end, and removes the file.
stop_pidfile() {
    local pid
    pid="$(cat "$1" 2>/dev/null)" || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$1"
}

stop_mailveil() { stop_pidfile "$W/mailveil.pid"; }

# An optional second relay for the benchmarks: the mailveil binary named by
# BASELINE_BIN (e.g. a release build of an earlier commit) with the same
# config, listening on 127.0.0.1:15xxx instead of :11xxx, so that both are
# measured in one run on this noisy machine. Started only when a script
# calls start_baseline; nothing happens without BASELINE_BIN.
BASELINE="${BASELINE_BIN:-}"
start_baseline() {
    [ -n "$BASELINE" ] || return 0
    sed -e 's/"127\.0\.0\.1:11/"127.0.0.1:15/' "$W/mailveil.toml" > "$W/baseline.toml"
    "$BASELINE" check --config "$W/baseline.toml" >/dev/null
    "$BASELINE" run --config "$W/baseline.toml" >"$W/log/baseline.out" 2>"$W/log/baseline.err" &
    echo $! > "$W/baseline.pid"
    wait_port 127.0.0.1 15465
    wait_port 127.0.0.1 15587
    wait_port 127.0.0.1 15993
    wait_port 127.0.0.1 15143
}
stop_baseline() { stop_pidfile "$W/baseline.pid"; }
# The benchmark peers in the order of round $1: as given on odd rounds,
# reversed on even ones, so that no peer always runs right after another.
round_order() { # round peers...
    local round="$1" i
    shift
    if [ $((round % 2)) = 1 ]; then
        printf '%s\n' "$@"
    else
        for ((i = $#; i > 0; i--)); do printf '%s\n' "${!i}"; done
    fi
}
# "path (sha256 prefix)" of a binary, for the benchmark logs.
describe_bin() { printf '%s (sha256 %s)' "$1" "$(sha256sum "$1" | cut -c1-12)"; }
# HAProxy ending the client's TLS and opening TLS again to the provider
# (TCP mode, the provider's certificate verified): two TLS legs and
# nothing else, no mail parsed, as a floor for the benchmarks. Like
# mailveil, it resumes no TLS session on either leg (no tickets, no session
# cache). SMTP 127.0.0.1:12466 -> Postfix 10465, IMAP 127.0.0.1:12994 ->
# Dovecot 10993. HAPROXY_MAXCONN: its connection limit (6,000).
start_tls_haproxy() {
    cat "$W/tls/cert.pem" "$W/tls/key.pem" > "$W/tls/haproxy.pem"
    cat > "$W/haproxy-bench.cfg" <<CFG
global
    maxconn ${HAPROXY_MAXCONN:-6000}
    nbthread 2
    tune.ssl.cachesize 0
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen smtps
    bind 127.0.0.1:12466 ssl crt $W/tls/haproxy.pem no-tls-tickets
    server postfix 127.0.0.2:10465 ssl verify required ca-file $W/tls/ca.pem verifyhost localhost no-ssl-reuse
listen imaps
    bind 127.0.0.1:12994 ssl crt $W/tls/haproxy.pem no-tls-tickets
    server dovecot 127.0.0.2:10993 ssl verify required ca-file $W/tls/ca.pem verifyhost localhost no-ssl-reuse
CFG
    haproxy -f "$W/haproxy-bench.cfg" -db >"$W/log/haproxy-bench.log" 2>&1 &
    echo $! > "$W/haproxy-bench.pid"
    wait_port 127.0.0.1 12466
    wait_port 127.0.0.1 12994
}

wait_port() { # host port
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1:$2 did not open" >&2
    return 1
}
wait_port 127.0.0.1 10081; wait_port 127.0.0.1 10993; wait_port 127.0.0.2 10143; wait_port 127.0.0.2 10465; wait_port 127.0.0.2 10587; wait_port 127.0.0.2 10025; wait_port 127.0.0.3 10465; wait_port 127.0.0.3 10993
start_mailveil
export W CA REPO MAILVEIL

