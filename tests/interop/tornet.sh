#!/usr/bin/env bash
# A private Tor network on 127.0.0.1 for the interop suite, ported from
# ../shared/tornet/run.sh: 3 directory authorities, 2 middle relays, 2 exits
# (whose policy allows 127.0.0.0/8), 1 onion service and 1 client with a
# SOCKS port on 127.0.0.1:10950, with Debian's `tor` in TestingTorNetwork
# mode. Brings the network up, writes what mailveil needs
# and exits, leaving the network running:
#   $BASE/egress-tor.toml   [egress.tor.testing_network] for mailveil's config
#   $BASE/onion             the onion service's address (port 5858 forwards
#                           to 127.0.0.1:$ONION_TARGET_PORT)
#   $BASE/pids              "name pid" per tor process
# Stop it with:  bash tornet.sh stop
# Nothing listens beyond 127.0.0.1 and nothing is routed off the host: the
# only streams asked for go to 127.0.0.0/8 (targets must be IP literals: the
# exits have no DNS).
set -euo pipefail

BASE=${BASE:-/tmp/mailveil-tornet}
ECHO_PORT=${ONION_TARGET_PORT:-4747}
HS_VPORT=5858
CLIENT_SOCKS=${CLIENT_SOCKS:-10950}
OR_BASE=5000   # ORPort  = OR_BASE  + node index
DIR_BASE=7000  # DirPort = DIR_BASE + node index
AUTHS=(a0 a1 a2); MIDS=(m0 m1); EXITS=(e0 e1)
RELAYS=("${AUTHS[@]}" "${MIDS[@]}" "${EXITS[@]}")

T0=${EPOCHREALTIME/./}
el() { local d=$(( ${EPOCHREALTIME/./} - T0 )); printf '%4d.%ds' $((d/1000000)) $(( d/100000 % 10 )); }
log() { echo "[tornet $(el)] $*"; }

stop() {
  [[ -f "$BASE/pids" ]] || return 0
  local p
  for p in $(awk '{print $2}' "$BASE/pids"); do kill "$p" 2>/dev/null || true; done
  # tor 0.4.x occasionally hangs in shutdown after SIGTERM: SIGKILL after 5 s
  for p in $(awk '{print $2}' "$BASE/pids"); do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -f "$BASE/pids" "$BASE/ready"
}
if [[ "${1:-}" == stop ]]; then stop; exit 0; fi
command -v tor >/dev/null && command -v tor-gencert >/dev/null || { echo "apt-get install tor"; exit 1; }

stop
rm -rf "$BASE"; mkdir -p "$BASE"; chmod 700 "$BASE"
echo "nameserver 127.0.0.1" > "$BASE/resolv.conf"
: > "$BASE/pids"
PIDS=()

# ---------------------------------------------------------------- keys
declare -A IDX FP ED V3
i=0
for n in "${RELAYS[@]}"; do
  IDX[$n]=$i; d=$BASE/$n; mkdir -p "$d/keys"; chmod 700 "$d"
  tor --defaults-torrc /dev/null -f /dev/null --ignore-missing-torrc --quiet \
      --DataDirectory "$d" --ORPort $((OR_BASE+i)) --Nickname "$n" --list-fingerprint >/dev/null
  FP[$n]=$(cut -d' ' -f2- "$d/fingerprint" | tr -d ' ')
  ED[$n]=$(cut -d' ' -f2 "$d/fingerprint-ed25519")
  i=$((i+1))
done
for n in "${AUTHS[@]}"; do
  (cd "$BASE/$n/keys" && echo "" | tor-gencert --create-identity-key -m 12 \
      -a 127.0.0.1:$((DIR_BASE+IDX[$n])) --passphrase-fd 0 >/dev/null 2>&1)
  V3[$n]=$(awk '/^fingerprint /{print $2}' "$BASE/$n/keys/authority_certificate")
done
log "keys generated"

# DirAuthority lines for C tor, and the same info for the arti client
DIRAUTH=""; : > "$BASE/arti-net.txt"
for n in "${AUTHS[@]}"; do
  o=$((OR_BASE+IDX[$n])); dp=$((DIR_BASE+IDX[$n]))
  DIRAUTH+="DirAuthority $n orport=$o no-v2 v3ident=${V3[$n]} 127.0.0.1:$dp ${FP[$n]}"$'\n'
  echo "auth ${V3[$n]} 127.0.0.1:$dp" >> "$BASE/arti-net.txt"
  echo "fallback ${FP[$n]} ${ED[$n]} 127.0.0.1:$o" >> "$BASE/arti-net.txt"
done

# ---------------------------------------------------------------- torrcs
# Authorities force flags: Exit only on the exits, Guard only on the non-exits.
EXIT_SET=$(for n in "${EXITS[@]}"; do printf '$%s,' "${FP[$n]}"; done); EXIT_SET=${EXIT_SET%,}
GUARD_SET=$(for n in "${AUTHS[@]}" "${MIDS[@]}"; do printf '$%s,' "${FP[$n]}"; done); GUARD_SET=${GUARD_SET%,}
OWNER=""  # the network outlives this script; tornet_stop ends it
common() { # $1 = nick
cat <<EOF
TestingTorNetwork 1
PathsNeededToBuildCircuits 0.67
TestingDirAuthVoteExit ${EXIT_SET}
TestingDirAuthVoteGuard ${GUARD_SET}
TestingDirAuthVoteHSDir *
TestingMinExitFlagThreshold 0
V3AuthNIntervalsValid 2
DataDirectory $BASE/$1
Nickname $1
ContactInfo $1@tornet.invalid
SocksPort 0
ShutdownWaitLength 0
SafeLogging 0
LogTimeGranularity 1
Log notice file $BASE/$1/notice.log
Sandbox 0
${OWNER}
${DIRAUTH}
EOF
}
relay() { # $1 = nick
cat <<EOF
Address 127.0.0.1
ORPort 127.0.0.1:$((OR_BASE+IDX[$1]))
DirPort 127.0.0.1:$((DIR_BASE+IDX[$1]))
AssumeReachable 1
ServerDNSDetectHijacking 0
# exits never need DNS here (targets are IPs); keep any lookup on 127.0.0.1
ServerDNSResolvConfFile $BASE/resolv.conf
EOF
}
for n in "${AUTHS[@]}"; do
  { common "$n"; relay "$n"; cat <<EOF
ExitRelay 0
ExitPolicy reject *:*
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
TestingV3AuthInitialVotingInterval 20
TestingV3AuthInitialVoteDelay 4
TestingV3AuthInitialDistDelay 4
V3AuthVotingInterval 20
V3AuthVoteDelay 4
V3AuthDistDelay 4
# C tor in TestingTorNetwork uses an onion-service time period of one SR run
# (24 votes = 24*20s = 8 min) but arti reads it from the hsdir_interval
# consensus parameter (default 1440 min): vote it so both agree.
ConsensusParams hsdir_interval=8
EOF
  } > "$BASE/$n/torrc"
done
for n in "${MIDS[@]}"; do
  { common "$n"; relay "$n"; echo "ExitRelay 0"; echo "ExitPolicy reject *:*"; } > "$BASE/$n/torrc"
done
for n in "${EXITS[@]}"; do
  { common "$n"; relay "$n"; cat <<EOF
ExitRelay 1
ExitPolicyRejectPrivate 0
ExitPolicy accept 127.0.0.0/8:*
# microdescriptor policy summaries ignore private addresses, so without a
# "public" accept arti (which uses microdescs) sees this relay as a non-exit.
# Nothing is routed off-host: the only streams asked for go to 127.0.0.1.
ExitPolicy accept *:*
# Right after start-up a client may have a newer consensus than this exit;
# don't refuse streams from circuits whose previous hop we don't know yet.
RefuseUnknownExits 0
Log info file $BASE/$n/info.log
EOF
  } > "$BASE/$n/torrc"
done
# A client with a SOCKS port (127.0.0.1:$CLIENT_SOCKS), as a user's Tor
# Browser or Orbot would be: what reaches mailveil's own onion service.
mkdir -p "$BASE/c0"; chmod 700 "$BASE/c0"
# Every name it is asked to resolve gets a virtual address from the client
# itself, never an exit's DNS lookup (torsocks resolves the local host name
# for swaks through it; the suite checks that no DNS packet is sent).
{ common c0 | sed "s/^SocksPort 0$/SocksPort 127.0.0.1:$CLIENT_SOCKS/"
  echo "AutomapHostsOnResolve 1"
  echo "AutomapHostsSuffixes ."
} > "$BASE/c0/torrc"
mkdir -p "$BASE/hs0"; chmod 700 "$BASE/hs0"
{ common hs0; cat <<EOF
HiddenServiceDir $BASE/hs0/hs
HiddenServicePort $HS_VPORT 127.0.0.1:$ECHO_PORT
Log info file $BASE/hs0/info.log
EOF
} > "$BASE/hs0/torrc"

# ---------------------------------------------------------------- start
for n in "${RELAYS[@]}" hs0 c0; do
  tor --defaults-torrc /dev/null -f "$BASE/$n/torrc" --quiet >"$BASE/$n/stdout" 2>&1 &
  PIDS+=($!); echo "$n $!" >> "$BASE/pids"
done
log "started ${#PIDS[@]} tor processes: $(tr '\n' ' ' < "$BASE/pids")"

# Wait until an authority's microdesc consensus lists all relays.
want=${#RELAYS[@]}
for _ in $(seq 300); do
  c=$BASE/a0/cached-microdesc-consensus
  got=$(grep -c '^r ' "$c" 2>/dev/null || true); got=${got:-0}
  [[ "$got" -ge "$want" ]] && break
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || { echo "tor pid $p died"; tail -n 20 "$BASE"/*/notice.log; stop; exit 1; }; done
  sleep 1
done
[[ "$got" -ge "$want" ]] || { echo "consensus never reached $want relays"; stop; exit 1; }
log "consensus lists $got relays"

if [[ "${SKIP_ONION:-0}" != 1 ]]; then
  for _ in $(seq 60); do [[ -s $BASE/hs0/hs/hostname ]] && break; sleep 1; done
  ONION=$(cat "$BASE/hs0/hs/hostname")
  log "onion service: $ONION"
  # wait for the first successful descriptor upload (client retries anyway)
  for _ in $(seq 90); do grep -q "HS descriptor stored successfully" "$BASE/hs0/info.log" && break; sleep 1; done
  if grep -q "HS descriptor stored successfully" "$BASE/hs0/info.log"; then
    log "onion descriptor uploaded"
  else
    log "onion descriptor not uploaded after 90 s (the service keeps trying; clients retry)"
  fi
fi

# ---------------------------------------------------------------- mailveil
{
  echo "[egress.tor.testing_network]"
  echo "# A PRIVATE TEST NETWORK on 127.0.0.1, made by tests/interop/tornet.sh."
  echo "enabled = true"
  echo "authorities = ["
  awk '$1 == "auth" {printf "  { v3ident = \"%s\", address = \"%s\" },\n", $2, $3}' "$BASE/arti-net.txt"
  echo "]"
  echo "fallbacks = ["
  awk '$1 == "fallback" {printf "  { rsa_identity = \"%s\", ed25519_identity = \"%s\", address = \"%s\" },\n", $2, $3, $4}' "$BASE/arti-net.txt"
  echo "]"
} > "$BASE/egress-tor.toml"
[[ -n "${ONION:-}" ]] && echo "$ONION" > "$BASE/onion"
touch "$BASE/ready"
log "network ready"
