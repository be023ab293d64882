#!/usr/bin/env bash
# The Debian package and README's "Deploy on a Debian VPS" (issue 17), in a
# clean Debian 12 root made here and booted under systemd (systemd-nspawn):
#   - `cargo deb` builds the package;
#   - README's deployment lines run as written inside the booted root, but
#     three: certbot's public ACME step (a certificate from the interop CA
#     handed to the shipped deploy hook instead), the editor (sed fills the
#     template with the interop servers and a private Tor network on
#     loopback), and ufw (run in a
#     private network namespace, so the host's firewall is not touched);
#   - the untouched template is refused with what to fill in;
#   - the installed unit passes `systemd-analyze verify` and
#     `security --offline` (<= 1.5);
#   - the real unit runs live: the key through LoadCredential, the
#     system-call filter allows what the relay does, a real client is
#     served, `systemctl stop` drains a message in progress;
#   - the package created no user and no state or log directory, and left
#     the unit disabled until the operator enabled it.
# Closes with "package: N passed, N failed". Needs root; loopback only
# (the root's packages come from Debian's mirror, as the README's apt lines
# do on a VPS).
#
#   bash tests/interop/package.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"
# lib.sh's own relay (on 11xxx) is not used here.
stop_mailveil

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE=/var/cache/mailveil-ci
ROOT="$W/debroot"
MACHINE=mailveil-ci
NSPAWN_PID=
LEADER=
# This script's own cgroups: nspawn makes the container's below them.
cg_of() { awk -F: -v c="$1" '$2 == c {print $3}' /proc/self/cgroup; }
SYSTEMD_CG="/sys/fs/cgroup/systemd$(cg_of name=systemd)"
UNIFIED_CG="/sys/fs/cgroup/unified$(cg_of '')"
MEMORY_CG="/sys/fs/cgroup/memory$(cg_of memory)"
if [ "$(cg_of memory)" = / ] || [ -z "$(cg_of memory)" ]; then
    echo "package.sh: run me from a cgroup of my own, not the root memory cgroup" >&2
    exit 2
fi

# ------------------------------------------------------------------ tools
# systemd-container pinned to the host's systemd, so that installing it
# upgrades nothing else on the machine.
host_systemd="$(dpkg-query -W -f='${Version}' systemd)"
if ! command -v systemd-nspawn >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    log "installing systemd-container ($host_systemd) and debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "systemd-container=$host_systemd" debootstrap >/dev/null
fi
if ! command -v cargo-deb >/dev/null 2>&1; then
    log "installing cargo-deb"
    cargo install --locked --quiet cargo-deb --version 3.8.0
fi

# ------------------------------------------------------------------ package
log "building the package (cargo deb)"
(cd "$REPO" && cargo deb --locked --no-build --quiet --output "$W/deb/") >/dev/null
DEB="$(ls "$W"/deb/mailveil_*.deb)"
ok "cargo deb built $(basename "$DEB") ($(( $(stat -c %s "$DEB") / 1024 )) KiB)"

# ------------------------------------------------------------------ a clean Debian 12 root
# debootstrap once into a tarball (about a minute), then a fresh copy for
# every run.
if [ ! -s "$CACHE/bookworm-minbase.tar" ]; then
    log "debootstrap bookworm (minbase + systemd), once"
    mkdir -p "$CACHE"
    rm -rf "$CACHE/root.tmp"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$CACHE/root.tmp" "$MIRROR" >"$W/log/debootstrap.log" 2>&1
    tar -C "$CACHE/root.tmp" -cf "$CACHE/bookworm-minbase.tar.part" .
    mv "$CACHE/bookworm-minbase.tar.part" "$CACHE/bookworm-minbase.tar"
    rm -rf "$CACHE/root.tmp"
fi
rm -rf "$ROOT"
mkdir -p "$ROOT"
tar -C "$ROOT" -xf "$CACHE/bookworm-minbase.tar"
ok "a clean Debian $(cat "$ROOT/etc/debian_version") root made from debootstrap's minbase"
cp "$DEB" "$ROOT/root/"
# README's apt lines ask before installing dependencies; here nobody answers.
printf 'APT::Get::Assume-Yes "true";\n' > "$ROOT/etc/apt/apt.conf.d/90mailveil-ci"
passwd_before="$(sha256sum < "$ROOT/etc/passwd")"

# ------------------------------------------------------------------ boot it
cleanup_container() {
    if [ -n "$LEADER" ] && kill -0 "$LEADER" 2>/dev/null; then
        nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1 || kill -TERM "$LEADER" 2>/dev/null || true
    fi
    if [ -n "$NSPAWN_PID" ]; then
        for _ in $(seq 1 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        # Killing the container's PID 1 ends everything in it; killing only
        # nspawn would leave it running.
        [ -n "$LEADER" ] && kill -KILL "$LEADER" 2>/dev/null || true
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    # Anything of the container still running (nspawn gone before its
    # systemd was found) is in nspawn's cgroup, below this script's own.
    cat "$SYSTEMD_CG"/payload/cgroup.procs "$SYSTEMD_CG"/payload/*/cgroup.procs \
        "$SYSTEMD_CG"/payload/*/*/cgroup.procs 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    sleep 0.2
    # nspawn leaves empty cgroups and its propagation directory behind:
    # this script's own only.
    find "$MEMORY_CG" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
    local d
    for d in "$SYSTEMD_CG"/{payload,supervisor} "$UNIFIED_CG"/{payload,supervisor}; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    rm -rf "/run/systemd/nspawn/propagate/$MACHINE"
    rmdir /run/systemd/nspawn/propagate /run/systemd/nspawn 2>/dev/null || true
    LEADER=
    NSPAWN_PID=
}
trap 'cleanup_container; stop_all' EXIT

log "booting the root under systemd (systemd-nspawn)"
t0=$(date +%s%N)
# --capability=CAP_IPC_LOCK: see the drop-in below. The host's network is
# shared, so that the relay in the root reaches the interop servers on
# loopback and clients here reach the relay.
systemd-nspawn -D "$ROOT" --machine="$MACHINE" --boot --register=no --keep-unit --console=passive \
    --capability=CAP_IPC_LOCK --resolv-conf=copy-host </dev/null >"$W/log/nspawn.log" 2>&1 &
NSPAWN_PID=$!
for _ in $(seq 1 300); do
    LEADER="$( (ps -o pid=,comm= --ppid "$NSPAWN_PID" || true) | awk '$2 == "systemd" {print $1}')"
    [ -n "$LEADER" ] && nsenter -t "$LEADER" -a test -S /run/systemd/private 2>/dev/null && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || { cat "$W/log/nspawn.log"; bad "systemd-nspawn exited"; exit 1; }
    sleep 0.1
done
ct() { nsenter -t "$LEADER" -a "$@"; }
state="$(ct systemctl is-system-running --wait || true)"
echo "systemd in the root: $state after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
# The memory controller is mounted read-only in the root: without this,
# MemoryMax= is accepted but not enforced.
ct mount -o remount,bind,rw /sys/fs/cgroup/memory && ct systemctl daemon-reexec
for _ in $(seq 1 50); do ct systemctl is-system-running >/dev/null 2>&1 && break; sleep 0.1; done
check "systemd runs as PID 1 in the root ($state)" test "$state" = running

# README's lines, one by one, as written.
mapfile -t STEPS < <(awk '/<!-- deploy-steps/ {f = 1; next} f && /^```sh/ {g = 1; next} g && /^```/ {exit} g' "$REPO/README.md")
[ "${#STEPS[@]}" -ge 8 ] || { bad "README's deploy steps not found (${#STEPS[@]} lines)"; exit 1; }
step() { # step N: runs README's line N in the root, in /root
    log "README step $1: ${STEPS[$1]}"
    ct sh -c "cd /root && ${STEPS[$1]}"
}
step_like() { # the README line matching a pattern
    local i
    for i in "${!STEPS[@]}"; do
        case "${STEPS[$i]}" in $1) echo "$i"; return 0 ;; esac
    done
    echo "FAIL - no README deploy line matches $1" >&2
    exit 1
}

# 1. apt install of the package.
i="$(step_like 'apt update && apt install ./mailveil_*')"
out="$(step "$i" 2>&1)" || { echo "$out"; bad "README: installing the package failed"; exit 1; }
echo "$out" | tail -15
check "the package installs with its dependencies on a clean Debian 12" ct dpkg-query -W mailveil
check "postinst says the service is not enabled and how to go on" grep -q "installed but not enabled" <<<"$out"
check "the unit is installed disabled" test "$(ct systemctl is-enabled mailveil.service 2>&1 || true)" = disabled
check "and not started" test "$(ct systemctl is-active mailveil.service 2>&1 || true)" = inactive
check "the package created no user" test "$(sha256sum < "$ROOT/etc/passwd")" = "$passwd_before"
check "nor a state, cache or log directory" test ! -e "$ROOT/var/lib/mailveil" -a ! -e "$ROOT/var/cache/mailveil" -a ! -e "$ROOT/var/log/mailveil"
check "the template is a conffile" grep -q '^ /etc/mailveil/mailveil.toml ' <<<"$(ct dpkg-query -W -f='${Conffiles}\n' mailveil)"
check "the unit runs /usr/bin/mailveil" grep -q '^ExecStart=/usr/bin/mailveil run' "$ROOT/usr/lib/systemd/system/mailveil.service"
check "the provider presets are installed, each as in the source tree" \
    sh -c 'for f in "$1"/config/providers/*.toml; do cmp -s "$f" "$2/usr/share/mailveil/providers/$(basename "$f")" || exit 1; done' \
    _ "$REPO" "$ROOT"

# The untouched template: refused, naming each value to set.
i="$(step_like 'mailveil check --config *')"
if out="$(step "$i" 2>&1)"; then
    bad "check passed on the untouched template"
else
    echo "$out" | grep -v '^ *[0-9]*: \|^ *at \|^Stack backtrace' || true
    want=("server.hostname" "upstream[0].smtp.host" "upstream[0].imap.host" "upstream[0].domains[0]")
    missing=0
    for key in "${want[@]}"; do grep -qF "\`$key\`" <<<"$out" || missing=1; done
    if [ "$missing" = 0 ] && grep -q "4 settings of the template still to fill in" <<<"$out"; then
        ok "check on the untouched template names the 4 values to fill in"
    else
        bad "check on the untouched template: $out"
    fi
fi

# The installed unit, offline.
if ct systemd-analyze verify mailveil.service >"$W/log/verify.log" 2>&1; then
    ok "systemd-analyze verify accepts the installed unit"
else
    cat "$W/log/verify.log"; bad "systemd-analyze verify"
fi
exposure="$(ct systemd-analyze security --offline=yes /usr/lib/systemd/system/mailveil.service 2>/dev/null \
    | awk '/Overall exposure level/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+$/) print $i}')"
if awk -v e="$exposure" 'BEGIN {exit !(e != "" && e <= 1.5)}'; then
    ok "installed unit's exposure $exposure (<= 1.5)"
else
    bad "installed unit's exposure: '$exposure'"
fi

# 2. certbot installs (its package only; the ACME step is replaced below).
i="$(step_like 'apt install certbot')"
step "$i" >"$W/log/certbot-install.log" 2>&1 && ok "README: certbot installs" || { tail "$W/log/certbot-install.log"; bad "certbot install"; }

# 3. Instead of certbot's public ACME exchange: a certificate for the relay
# from the interop CA, in certbot's layout, handed to the shipped hook the
# way certbot calls it.
LIVE="$ROOT/etc/letsencrypt/live/relay.test"
mkdir -p "$LIVE"
openssl ecparam -name prime256v1 -genkey -noout -out "$LIVE/privkey.pem"
openssl req -new -key "$LIVE/privkey.pem" -subj "/CN=relay.test" -out "$W/tls/relay.csr" 2>/dev/null
printf 'subjectAltName=DNS:relay.test,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$W/tls/relay.ext"
openssl x509 -req -in "$W/tls/relay.csr" -CA "$CA" -CAkey "$W/tls/ca-key.pem" -CAcreateserial -days 30 \
    -extfile "$W/tls/relay.ext" -out "$LIVE/cert.pem" 2>/dev/null
cat "$LIVE/cert.pem" "$CA" > "$LIVE/fullchain.pem"
relay_fp="$(openssl x509 -in "$LIVE/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2)"
check "the deploy hook installs a certificate as certbot would call it" \
    ct env RENEWED_LINEAGE=/etc/letsencrypt/live/relay.test /usr/share/mailveil/certbot-deploy-hook
check "the key is root's only (0600), the chain readable (0644)" \
    test "$(stat -c %a "$ROOT/etc/mailveil/tls.key") $(stat -c %a "$ROOT/etc/mailveil/fullchain.pem")" = "600 644"

# 4. Instead of the editor: fill the template in for the interop servers.
# Egress stays Tor, as shipped: the embedded client, under the unit's
# hardening, on a private Tor network on loopback (tornet.sh).
log "starting a private Tor network"
BASE="$W/tornet" bash "$HERE/tornet.sh" >"$W/log/tornet.log" 2>&1 || { tail "$W/log/tornet.log"; bad "tornet"; exit 1; }
trap 'cleanup_container; BASE="$W/tornet" bash "$HERE/tornet.sh" stop >/dev/null 2>&1 || true; stop_all' EXIT
cp "$CA" "$ROOT/etc/mailveil/interop-ca.pem"
T="$ROOT/etc/mailveil/mailveil.toml"
sed -i \
    -e 's|^hostname = "FILL IN:[^"]*"|hostname = "relay.test"|' \
    -e 's|^smtp = { host = "FILL IN:[^"]*", port = 465|smtp = { host = "127.0.0.2", port = 10465|' \
    -e 's|^imap = { host = "FILL IN:[^"]*", port = 993|imap = { host = "127.0.0.2", port = 10993|' \
    -e 's|^domains = \["FILL IN:[^"]*"\]|domains = ["example.test"]\nca = "/etc/mailveil/interop-ca.pem"|' \
    "$T"
cat "$W/tornet/egress-tor.toml" >> "$T"
i="$(step_like 'mailveil check --config *')"
if out="$(step "$i" 2>&1)"; then
    echo "$out"
    ok "check passes on the filled-in template"
    # Never the public Tor network from here.
    grep -q "PRIVATE TESTING NETWORK\|testing network" <<<"$out" || { bad "the filled config does not use the private Tor network"; exit 1; }
    check "check read the certificate and left the key to systemd" grep -q "delivered by systemd" <<<"$out"
else
    echo "$out"; bad "check on the filled-in template"
fi

# 5. ufw: in a network namespace of its own, so the host's firewall is not
# touched (installed first: that namespace has no network).
ct apt-get install -q ufw >"$W/log/ufw-install.log" 2>&1 || true
i="$(step_like 'apt install ufw*')"
if ct unshare --net sh -c "cd /root && ${STEPS[$i]} && ufw status" >"$W/log/ufw.log" 2>&1 \
    && grep -q "Status: active" "$W/log/ufw.log" && grep -q "^465,587,993,143,80/tcp\|^80,143,465,587,993/tcp" "$W/log/ufw.log"; then
    ok "README: the ufw line runs and the firewall is active with the mail ports open (in a private network namespace)"
else
    tail -5 "$W/log/ufw.log"
    bad "README: the ufw line, in the test's private network namespace"
fi

# 6. journald in memory only.
i="$(step_like 'mkdir -p /etc/systemd/journald.conf.d*')"
step "$i"
check "README: journald keeps the journal in memory (Storage=volatile)" \
    sh -c "nsenter -t $LEADER -a systemd-analyze cat-config systemd/journald.conf | grep -q '^Storage=volatile'"

# 7. No swap, no hibernation. swapoff acts on the whole machine: only when
# it has no swap to turn off (nothing changes), else not run.
i="$(step_like 'swapoff -a*')"
if [ "$(wc -l < /proc/swaps)" -le 1 ]; then
    step "$i"
    check "README: hibernation masked" test "$(ct systemctl is-enabled hibernate.target 2>&1 || true)" = masked
else
    echo "note - this machine has swap; README's swapoff line not run here"
fi

# Only for this test: the machine's hard RLIMIT_MEMLOCK is $(ulimit -Hl) KiB
# and the root cannot raise it (no CAP_SYS_RESOURCE in this sandbox), so
# LimitMEMLOCK=infinity becomes that. CAP_IPC_LOCK lets the relay lock its
# memory anyway, so that mlockall runs under the unit's system-call filter.
mkdir -p "$ROOT/etc/systemd/system/mailveil.service.d"
# And a soft descriptor limit below the hard one, so that the relay must
# raise it itself (prlimit) under the filter: the unit alone sets both to
# 16384, which would leave nothing to raise.
printf '[Service]\nAmbientCapabilities=CAP_IPC_LOCK\nCapabilityBoundingSet=CAP_IPC_LOCK\nLimitNOFILE=1024:16384\n' \
    > "$ROOT/etc/systemd/system/mailveil.service.d/ci-memlock.conf"
echo "hard limits here: nofile $(ulimit -Hn), memlock $(ulimit -Hl) KiB"

# 8. Enable and start.
i="$(step_like 'systemctl enable --now mailveil')"
step "$i" 2>&1 | tail -3
for _ in $(seq 1 50); do ct systemctl is-active --quiet mailveil.service && break; sleep 0.1; done
check "README: systemctl enable --now starts the relay" ct systemctl is-active --quiet mailveil.service
check "and enables it" test "$(ct systemctl is-enabled mailveil.service)" = enabled
for _ in $(seq 1 240); do
    ct journalctl -u mailveil.service -o cat --no-pager | grep -q "Tor: bootstrapped, ready" && break
    sleep 0.5
done
check "the embedded Tor client bootstraps under the unit (private Tor network)" \
    sh -c "nsenter -t $LEADER -a journalctl -u mailveil.service -o cat --no-pager | grep -q 'Tor: bootstrapped, ready'"
check "and keeps its files in the unit's runtime directory (/run/mailveil)" \
    sh -c "nsenter -t $LEADER -a sh -c 'ls -d /run/mailveil/mailveil-tor-*/cache' >/dev/null"
wait_port 127.0.0.1 465 && wait_port 127.0.0.1 993 || true
pid="$(ct systemctl show -p MainPID --value mailveil.service)"
journal() { ct journalctl -u mailveil.service -o cat --no-pager; }
journal | sed -n 1,20p
check "the relay runs as a dynamic user, not root" test "$(ct stat -c %u "/proc/$pid")" -ge 61184
check "LoadCredential delivered the key to the service" \
    ct test -s /run/credentials/mailveil.service/tls.key
check "the system-call filter let it lock its memory (mlockall)" sh -c "nsenter -t $LEADER -a journalctl -u mailveil.service -o cat --no-pager | grep -q 'memory locked'"
check "and raise its descriptor limit (prlimit): soft = hard = 16384" \
    sh -c "nsenter -t $LEADER -a cat /proc/$pid/limits | grep -q 'Max open files *16384 *16384'"
check "MemoryMax is in force (the service's memory is accounted: $(ct systemctl show -p MemoryCurrent --value mailveil.service) bytes)" \
    sh -c "nsenter -t $LEADER -a systemctl show -p MemoryCurrent --value mailveil.service | grep -q '^[0-9][0-9]*$'"
check "no core dumps: its core limit is 0" sh -c "nsenter -t $LEADER -a cat /proc/$pid/limits | grep -q 'Max core file size *0 *0'"

# A real client, through the unit's relay (127.0.0.1:465 and :993, with
# the certificate the hook installed) to Postfix and Dovecot.
served_fp="$(openssl s_client -connect 127.0.0.1:465 -servername relay.test </dev/null 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2)"
check "the relay serves the certificate the hook installed" test "$served_fp" = "$relay_fp"
if swaks --server 127.0.0.1:465 --tls-on-connect --tls-verify --tls-ca-path "$CA" --tls-sni relay.test \
    --auth PLAIN --auth-user alice@example.test --auth-password alice-pw \
    --from alice@example.test --to bob@example.test --header "Subject: via the package" \
    >"$W/log/package-swaks.log" 2>&1; then
    ok "swaks sent through the unit's relay (465, certificate verified) → Tor → Postfix"
else
    tail -5 "$W/log/package-swaks.log"; bad "swaks through the unit's relay"
fi
imap_out="$(python3 - "$CA" <<'PY'
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
with imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=ctx) as m:
    m.login("alice@example.test", "alice-pw")
    print(m.select("INBOX")[0])
PY
)" && [ "$imap_out" = OK ] && ok "imaplib logged in and selected INBOX through the unit's relay (993)" \
    || bad "imaplib through the unit's relay: $imap_out"

# A renewal while the relay runs: certbot calls the hook again, which
# must restart the relay (a reload would keep the old key, which
# LoadCredential copied at start) so that it serves the new certificate.
openssl req -new -key "$LIVE/privkey.pem" -subj "/CN=relay.test" -out "$W/tls/relay2.csr" 2>/dev/null
openssl x509 -req -in "$W/tls/relay2.csr" -CA "$CA" -CAkey "$W/tls/ca-key.pem" -CAcreateserial -days 60 \
    -extfile "$W/tls/relay.ext" -out "$LIVE/cert.pem" 2>/dev/null
cat "$LIVE/cert.pem" "$CA" > "$LIVE/fullchain.pem"
renewed_fp="$(openssl x509 -in "$LIVE/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2)"
ct env RENEWED_LINEAGE=/etc/letsencrypt/live/relay.test /usr/share/mailveil/certbot-deploy-hook
for _ in $(seq 1 100); do
    [ "$(ct systemctl show -p MainPID --value mailveil.service)" != "$pid" ] \
        && ct systemctl is-active --quiet mailveil.service && break
    sleep 0.1
done
wait_port 127.0.0.1 465 || true
served_fp="$(openssl s_client -connect 127.0.0.1:465 -servername relay.test </dev/null 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2)"
check "a renewal through the hook restarted the relay, which serves the new certificate" \
    test "$served_fp" = "$renewed_fp" -a "$renewed_fp" != "$relay_fp" \
    -a "$(ct systemctl show -p MainPID --value mailveil.service)" != "$pid"
pid="$(ct systemctl show -p MainPID --value mailveil.service)"
for _ in $(seq 1 240); do
    ct journalctl -u mailveil.service -o cat --no-pager | grep -c "Tor: bootstrapped, ready" | grep -q '^2$' && break
    sleep 0.5
done

# 9. check --probe, as written.
i="$(step_like 'mailveil check --probe *')"
if out="$(step "$i" 2>&1)"; then
    echo "$out" | grep -v 'Requested [0-9]* relays\|had zero weight' | tail -4
    ok "README: check --probe reaches the provider's SMTP and IMAP"
    if grep -q ' ERROR ' <<<"$out"; then bad "check --probe printed an error"; else ok "check --probe printed no error"; fi
else
    echo "$out"; bad "check --probe"
fi

# Members only, as README's "Running a relay for a collective" does it: a
# secret, the [access] table; without the drop-in the unit does not start
# and says which drop-in to install; with it, the credential reaches the
# dynamic user and only the listed login is served.
log "members only under the unit"
# In one shell, as README writes it, so that its umask would carry over.
ct sh -c '(umask 077; head -c 32 /dev/urandom > /etc/mailveil/access-key)
          printf "alice@example.test\n" | mailveil access add >> /etc/mailveil/members'
printf '\n[access]\nlist = "/etc/mailveil/members"\n' >> "$ROOT/etc/mailveil/mailveil.toml"
ct systemctl restart mailveil.service || true
for _ in $(seq 1 100); do ct systemctl is-failed --quiet mailveil.service && break; sleep 0.1; done
check "without the drop-in the relay does not start, and says which drop-in to install" \
    sh -c "! nsenter -t $LEADER -a systemctl is-active --quiet mailveil.service &&
           nsenter -t $LEADER -a journalctl -u mailveil.service -o cat --no-pager | grep -q 'install -D -m 644 /usr/share/mailveil/access.conf'"
ct install -D -m 644 /usr/share/mailveil/access.conf /etc/systemd/system/mailveil.service.d/access.conf
ct systemctl daemon-reload
ct systemctl reset-failed mailveil.service || true
ct systemctl restart mailveil.service
for _ in $(seq 1 240); do
    ct journalctl -u mailveil.service -o cat --no-pager | grep -c "Tor: bootstrapped, ready" | grep -q '^3$' && break
    sleep 0.5
done
wait_port 127.0.0.1 465 || true
check "with the drop-in it runs, and LoadCredential delivered the access secret" \
    sh -c "nsenter -t $LEADER -a systemctl is-active --quiet mailveil.service &&
           nsenter -t $LEADER -a test -s /run/credentials/mailveil.service/mailveil-access-key"
members_swaks() { # login password
    swaks --server 127.0.0.1:465 --tls-on-connect --tls-verify --tls-ca-path "$CA" --tls-sni relay.test \
        --auth PLAIN --auth-user "$1" --auth-password "$2" \
        --from alice@example.test --to alice@example.test --header "Subject: members only" 2>&1
}
check "a member sends through it" sh -c 'echo "$1" | grep -q "250 .*queued as"' _ "$(members_swaks alice@example.test alice-pw)"
check "a stranger with real credentials gets 535 5.7.8 Authentication credentials invalid" \
    sh -c 'echo "$1" | grep -q "535 5.7.8 Authentication credentials invalid"' _ "$(members_swaks bob@example.test bob-pw)"

log "an onion service under the unit, its key by LoadCredential"
# As README writes it: the key made once by root, handed to the service as
# a credential; the service's directory is the credentials directory.
ct mailveil onion-key /etc/mailveil/onion > "$W/pkg-onion-address"
mkdir -p "$ROOT/etc/systemd/system/mailveil.service.d"
printf '[Service]\nLoadCredential=hs_ed25519_secret_key:/etc/mailveil/onion/hs_ed25519_secret_key\n' \
    > "$ROOT/etc/systemd/system/mailveil.service.d/onion.conf"
# vanguards-lite: the private network has too few relays for full ones.
printf '\n[onion]\nkey_directory = "/run/credentials/mailveil.service"\nvanguards = "lite"\n\n[[listen]]\nprotocol = "imap"\naddress = "onion:993"\ntls = "implicit"\n' \
    >> "$ROOT/etc/mailveil/mailveil.toml"
ct systemctl daemon-reload
ct systemctl restart mailveil.service
for _ in $(seq 1 240); do
    ct journalctl -u mailveil.service -o cat --no-pager | grep -q "onion service $(cat "$W/pkg-onion-address"): launched" && break
    sleep 0.5
done
ct mailveil check --config /etc/mailveil/mailveil.toml > "$W/log/pkg-onion-check.out" 2>&1 || true
# Root can read the running service's credential: check then reads the key
# there and prints its address.
check "check reads the credential's address; the unit launches the service at the key's address" \
    sh -c "grep -q 'onion service address: $(cat "$W/pkg-onion-address")' '$W/log/pkg-onion-check.out' &&
           nsenter -t $LEADER -a journalctl -u mailveil.service -o cat --no-pager | grep -q 'onion service $(cat "$W/pkg-onion-address"): launched'"
pkg_pin="$(ct journalctl -u mailveil.service -o cat --no-pager | sed -n 's/.*listener onion:993 has a name of its own.*fingerprint //p' | tail -1)"
check "a Tor client reaches the unit's onion service (IMAP greeting, pinned certificate)" \
    python3 "$HERE/onion_clients.py" reach 10950 "$(cat "$W/pkg-onion-address")" "$pkg_pin" 300

# systemctl stop drains: a message in progress when the stop comes is
# still relayed and answered before the relay exits.
log "systemctl stop with a message in progress"
coproc DRAIN { python3 - "$CA" <<'PY'
import smtplib, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = smtplib.SMTP_SSL("127.0.0.1", 465, context=ctx, timeout=60)
s.login("alice@example.test", "alice-pw")
s.mail("alice@example.test"); s.rcpt("bob@example.test")
code, _ = s.docmd("DATA")
assert code == 354, code
s.send(b"Subject: drained\r\n\r\nfirst half\r\n")
print("in-progress", flush=True)
sys.stdin.readline()          # the stop has been asked for
time.sleep(1)
s.send(b"second half\r\n.\r\n")
code, text = s.getreply()
print(f"reply {code}", flush=True)
PY
}
drain_pid=$DRAIN_PID
read -r line <&"${DRAIN[0]}" || line="(none)"
[ "$line" = in-progress ] || bad "the draining client did not get to DATA: $line"
t_stop=$(date +%s%N)
ct systemctl stop --no-block mailveil.service
sleep 0.5
echo go >&"${DRAIN[1]}"
read -r reply <&"${DRAIN[0]}" || reply="(none)"
for _ in $(seq 1 400); do ct systemctl is-active --quiet mailveil.service || break; sleep 0.1; done
stop_ms=$(( ($(date +%s%N) - t_stop) / 1000000 ))
wait "$drain_pid" 2>/dev/null || true
check "systemctl stop drained: the message in progress got '$reply'" test "$reply" = "reply 250"
check "and the relay stopped afterwards ($stop_ms ms, result $(ct systemctl show -p Result --value mailveil.service))" \
    sh -c "! nsenter -t $LEADER -a systemctl is-active --quiet mailveil.service"
journal | tail -5
if journal | grep -q ' ERROR '; then
    bad "the relay logged an error under the unit: $(journal | grep " ERROR " | sed -n 1,3p)"
else
    ok "the relay logged no error from start to stop under the unit"
fi

# Purge: the package takes what it and its README put in /etc with it.
ct dpkg --purge mailveil >"$W/log/package-purge.log" 2>&1 || { tail -5 "$W/log/package-purge.log"; bad "dpkg --purge mailveil"; }
check "purge removes the access secret, the members list, the onion key, the drop-ins, the TLS key and the config" \
    sh -c 'for f in etc/mailveil/access-key etc/mailveil/members etc/systemd/system/mailveil.service.d/access.conf \
                    etc/mailveil/onion/hs_ed25519_secret_key etc/systemd/system/mailveil.service.d/onion.conf \
                    etc/mailveil/tls.key etc/mailveil/mailveil.toml; do
               [ ! -e "$1/$f" ] || { echo "left: /$f"; exit 1; }
           done' _ "$ROOT"

cleanup_container
echo "package: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
