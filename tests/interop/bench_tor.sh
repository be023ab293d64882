#!/usr/bin/env bash
# Tor egress benchmark on the private Tor network (tornet.sh), in one run:
# time to bootstrap, time from start to the first relayed message, per-message
# latency over Tor against the same Postfix reached directly through mailveil,
# and mailveil's RSS with Tor running. Then round trips: per-message latency
# with a client that waits for every reply (what the relay did for every
# client before it pipelined), one that pipelines MAIL/RCPT/DATA, and one
# that pipelines BDAT, each over the embedded arti, over the private
# network's C tor client as a SOCKS5 proxy (arti's share), and with direct
# egress; and swaks per run, with and without --pipeline. Prints figures
# only; nothing passes or fails on speed. Needs root (sets up like run.sh).
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
trap 'BASE="$W/tornet" bash "$HERE/tornet.sh" stop; for p in tor ctor; do [ -f "$W/$p.pid" ] && kill "$(cat "$W/$p.pid")" 2>/dev/null; done; stop_all' EXIT
OUT="$W/bench-tor.jsonl"
: > "$OUT"

log "bringing up the private Tor network"
ONION_TARGET_PORT=10993 BASE="$W/tornet" bash "$HERE/tornet.sh"
ONION="$(cat "$W/tornet/onion")"
mkdir -m 700 -p "$W/tor-run"
# The benchmark sends hundreds of messages as alice within the hour.
UNLIMITED='s#^\[limits\]$#[limits]\nmessages_per_account_per_hour = 1000000#'
sed -e "s#@W@#$W#g" -e "s#@MODE@#tor#" -e "s#@PORT@#13#g" -e "s#@ONION@#$ONION#" -e "$UNLIMITED" \
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
# The same relay with the private network's C tor client (tornet.sh's c0) as
# its SOCKS5 proxy: the same circuits' length, C tor instead of arti.
sed -e "s#@W@#$W#g" -e "s#@MODE@#socks5#" -e "s#@PORT@#12#g" -e "s#@ONION@#$ONION#" \
    -e 's#^socks5 = .*#socks5 = "127.0.0.1:10950"#' -e "$UNLIMITED" \
    "$HERE/mailveil-egress.toml.in" > "$W/ctor.toml"
"$MAILVEIL" run --config "$W/ctor.toml" >/dev/null 2>"$W/log/ctor-bench.err" &
echo $! > "$W/ctor.pid"
wait_port 127.0.0.1 12465

PIPE_MESSAGES="${PIPE_MESSAGES:-20}"
PIPE_SIZES="${PIPE_SIZES:-1024 4096}"
log "round trips: $PIPE_MESSAGES messages per client mode, size ($PIPE_SIZES bytes) and path x $ROUNDS rounds, one session each"
for round in $(seq 1 "$ROUNDS"); do
    for size in $PIPE_SIZES; do
        for mode in lockstep data bdat; do
            for path in $(round_order "$round" arti:13465 ctor:12465 direct:11465); do
                python3 "$HERE/smtp_pipeline.py" latency --port "${path#*:}" --mode "$mode" --size "$size" \
                    --messages "$PIPE_MESSAGES" --label "${path%%:*}" | sed "s/^{/{\"size\": $size, /" | tee -a "$OUT"
            done
        done
    done
done

SWAKS_RUNS="${SWAKS_RUNS:-10}"
log "swaks over arti, with and without --pipeline: $SWAKS_RUNS runs each, alternating"
swaks_ms() { # extra swaks options...: one run's wall time in ms
    local t0; t0="$(date +%s%N)"
    swaks -s 127.0.0.1:13465 --tlsc --tls-verify --tls-ca-path "$CA" -a PLAIN -au alice@example.test \
        -ap alice-pw -f alice@example.test -t sink@example.test,sink@example.test --silent 2 "$@" >/dev/null 2>&1 \
        || { echo -1; return; }
    echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
for i in $(seq 1 "$SWAKS_RUNS"); do
    for variant in $(round_order "$i" lockstep pipeline); do
        if [ "$variant" = pipeline ]; then ms="$(swaks_ms --pipeline)"; else ms="$(swaks_ms)"; fi
        printf '{"test": "swaks", "variant": "%s", "ms": %s}\n' "$variant" "$ms" | tee -a "$OUT"
    done
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
    return statistics.median(r[key] for r in rows if r.get("label") == label and r.get("test") != "pipeline")
for key in ("p50_ms", "p99_ms", "msgs_per_s"):
    d, t = med("direct", key), med("tor", key)
    print(f"{key:10s} direct {d:8.2f}  tor {t:8.2f}  ({t / d:.2f}x)")
errors = sum(r.get("errors", 0) for r in rows if "label" in r and r.get("test") != "pipeline")
print(f"errors: {errors}")
pipe = [r for r in rows if r.get("test") == "pipeline"]
if pipe:
    print("round trips: per-message p50 in ms (median over rounds); client modes:")
    print("  lockstep = waits for every reply (the relay made 3 provider round trips per message for every client before)")
    print("  data     = MAIL, RCPT and DATA pipelined (2 round trips: DATA waits for RCPT's reply)")
    print("  bdat     = MAIL, RCPT and BDAT LAST pipelined (1 round trip)")
    for size in sorted({r["size"] for r in pipe}):
        print(f"  body {size} bytes:")
        print(f"  {'path':8s} {'lockstep':>9s} {'data':>9s} {'bdat':>9s}   data/lockstep  bdat/lockstep")
        def p50(path, mode):
            return statistics.median(r["p50_ms"] for r in pipe
                                     if r["label"] == path and r["mode"] == mode and r["size"] == size)
        for path in ("arti", "ctor", "direct"):
            m = {mode: p50(path, mode) for mode in ("lockstep", "data", "bdat")}
            print(f"  {path:8s} {m['lockstep']:9.2f} {m['data']:9.2f} {m['bdat']:9.2f}   "
                  f"{m['data'] / m['lockstep']:12.2f}x  {m['bdat'] / m['lockstep']:12.2f}x")
        for mode in ("lockstep", "data", "bdat"):
            a, c = p50("arti", mode), p50("ctor", mode)
            print(f"  {mode}: arti {a:.2f} ms against C tor {c:.2f} ms ({a / c:.2f}x)")
    print(f"  errors: {sum(r['errors'] for r in pipe)}")
sw = [r for r in rows if r.get("test") == "swaks"]
if sw:
    for variant in ("lockstep", "pipeline"):
        ms = [r["ms"] for r in sw if r["variant"] == variant and r["ms"] >= 0]
        failed = sum(1 for r in sw if r["variant"] == variant and r["ms"] < 0)
        if ms:
            print(f"swaks over arti ({variant}): median {statistics.median(ms):.0f} ms per run "
                  f"(connect, TLS, AUTH, one message to 2 recipients, QUIT; {len(ms)} runs, {failed} failed)")
for r in rows:
    if r.get("test") == "rss":
        print(f"mailveil RSS after the runs: with Tor {r['tor_kib'] / 1024:.1f} MiB, direct egress {r['direct_kib'] / 1024:.1f} MiB")
PY
