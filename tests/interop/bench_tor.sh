#!/usr/bin/env bash
# Tor egress benchmark on the private Tor network (tornet.sh), in one run:
# time to bootstrap, time from start to the first relayed message, per-message
# latency over Tor against the same Postfix reached directly through mailveil,
# and mailveil's RSS with Tor running. Prints figures only; nothing passes or
# fails on speed. Needs root (sets up like run.sh).
#
#   bash tests/interop/bench_tor.sh            # 3 rounds of 100 messages, one session
#   ROUNDS=5 MESSAGES=200 bash tests/interop/bench_tor.sh
#
# All on loopback: the "Tor network" is 8 tor processes on 127.0.0.1, so the
# latency here is Tor's protocol and crypto cost on this machine, not the
# network delay of real relays (which adds tens to hundreds of ms per hop).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"
ROUNDS="${ROUNDS:-3}"
MESSAGES="${MESSAGES:-100}"

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"
trap 'BASE="$W/tornet" bash "$HERE/tornet.sh" stop; [ -f "$W/tor.pid" ] && kill "$(cat "$W/tor.pid")" 2>/dev/null; stop_all' EXIT
OUT="$W/bench-tor.jsonl"
: > "$OUT"

log "bringing up the private Tor network"
ONION_TARGET_PORT=10993 BASE="$W/tornet" bash "$HERE/tornet.sh"
ONION="$(cat "$W/tornet/onion")"
mkdir -m 700 -p "$W/tor-run"
sed -e "s#@W@#$W#g" -e "s#@MODE@#tor#" -e "s#@PORT@#13#g" -e "s#@ONION@#$ONION#" \
    "$HERE/mailveil-egress.toml.in" > "$W/tor.toml"
cat "$W/tornet/egress-tor.toml" >> "$W/tor.toml"

log "start-up: bootstrap and first message"
python3 "$HERE/bench_tor.py" startup --mailveil "$MAILVEIL" --config "$W/tor.toml" \
    --port 13465 --pidfile "$W/tor.pid" --log "$W/log/tor-bench.err" | tee -a "$OUT"

log "per-message latency, one session, $MESSAGES messages x $ROUNDS rounds (direct = mailveil with direct egress)"
for _ in $(seq 1 "$ROUNDS"); do
    python3 "$HERE/bench_smtp.py" --host 127.0.0.1 --port 11465 --sessions 1 --messages "$MESSAGES" --label direct | tee -a "$OUT"
    python3 "$HERE/bench_smtp.py" --host 127.0.0.1 --port 13465 --sessions 1 --messages "$MESSAGES" --label tor | tee -a "$OUT"
done
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
printf '{"test": "rss", "tor_kib": %s, "direct_kib": %s}\n' \
    "$(rss "$(cat "$W/tor.pid")")" "$(rss "$(cat "$W/mailveil.pid")")" | tee -a "$OUT"

log "summary (medians over rounds)"
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows:
    if r.get("test") == "startup":
        print(f"Tor bootstrap {r['bootstrap_s']} s after start; first message relayed {r['first_message_s']} s after start "
              f"({r['attempts']} attempts)")
def med(label, key):
    return statistics.median(r[key] for r in rows if r.get("label") == label)
for key in ("p50_ms", "p99_ms", "msgs_per_s"):
    d, t = med("direct", key), med("tor", key)
    print(f"{key:10s} direct {d:8.2f}  tor {t:8.2f}  ({t / d:.2f}x)")
errors = sum(r.get("errors", 0) for r in rows if "label" in r)
print(f"errors: {errors}")
for r in rows:
    if r.get("test") == "rss":
        print(f"mailveil RSS after the runs: with Tor {r['tor_kib'] / 1024:.1f} MiB, direct egress {r['direct_kib'] / 1024:.1f} MiB")
PY
