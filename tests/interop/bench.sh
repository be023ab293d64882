#!/usr/bin/env bash
# SMTP submission benchmark: the same Postfix measured directly and through
# mailveil in one run (alternating rounds, so machine noise hits both), plus
# mailveil's peak RSS while relaying one 25 MB message. Prints figures only;
# nothing here passes or fails on speed. Needs root (sets up like run.sh).
#
#   bash tests/interop/bench.sh            # defaults: 8 sessions, 800 messages, 5 rounds
#   SESSIONS=16 MESSAGES=1600 ROUNDS=5 bash tests/interop/bench.sh
#   BASELINE_BIN=/tmp/old/target/release/mailveil bash tests/interop/bench.sh
#
# With BASELINE_BIN, a second mailveil from that binary (same config, ports
# 127.0.0.1:15xxx) is measured as one more peer, "baseline", in every round,
# alternating with the others; the summary adds its figures and the ratio
# mailveil/baseline (as a ratio of medians and as the median of the rounds'
# ratios), and a one-session latency run that alternates message by message
# between the two. Rounds run the peers in turn, the order reversed every
# other round. MAILVEIL_BIN chooses the binary under test (see lib.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"
SESSIONS="${SESSIONS:-8}"
MESSAGES="${MESSAGES:-800}"
ROUNDS="${ROUNDS:-5}"
SIZE="${SIZE:-4096}"

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"
OUT="$W/bench.jsonl"
: > "$OUT"

log "mailveil: $(describe_bin "$MAILVEIL")"
declare -A HOST=([direct]=127.0.0.2 [mailveil]=127.0.0.1 [baseline]=127.0.0.1 [haproxy]=127.0.0.1)
declare -A PORT=([direct]=10465 [mailveil]=11465 [baseline]=15465 [haproxy]=12466)
# haproxy: two TLS legs and nothing else (lib.sh, start_tls_haproxy), the
# floor any relay that ends and reopens TLS pays.
start_tls_haproxy
PEERS=(direct mailveil haproxy)
if [ -n "$BASELINE" ]; then
    start_baseline
    log "baseline: $(describe_bin "$BASELINE") on 127.0.0.1:15465"
    PEERS+=(baseline)
fi

log "warm-up"
for p in "${PEERS[@]}"; do
    python3 "$HERE/bench_smtp.py" --host "${HOST[$p]}" --port "${PORT[$p]}" --sessions 2 --messages 40 --label warm >/dev/null
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat"; }
TICKS="$(getconf CLK_TCK)"

log "throughput and latency: $ROUNDS rounds x $MESSAGES messages of ~$SIZE bytes over $SESSIONS sessions"
MV_PID="$(cat "$W/mailveil.pid")"
MV_CPU_START="$(cpu_ticks "$MV_PID")"
MV_SYS_START="$(sys_ticks "$MV_PID")"
if [ -n "$BASELINE" ]; then
    BL_PID="$(cat "$W/baseline.pid")"
    BL_CPU_START="$(cpu_ticks "$BL_PID")"
    BL_SYS_START="$(sys_ticks "$BL_PID")"
fi
HA_PID="$(cat "$W/haproxy-bench.pid")"
HA_CPU_START="$(cpu_ticks "$HA_PID")"
HA_SYS_START="$(sys_ticks "$HA_PID")"
for round in $(seq 1 "$ROUNDS"); do
    for p in $(round_order "$round" "${PEERS[@]}"); do
        python3 "$HERE/bench_smtp.py" --host "${HOST[$p]}" --port "${PORT[$p]}" --sessions "$SESSIONS" \
            --messages "$MESSAGES" --size "$SIZE" --label "$p" | tee -a "$OUT"
    done
done

cpu_line() { # label cpu-start cpu-end sys-start sys-end
    python3 -c "import sys; l=sys.argv[1]; a=[int(x) for x in sys.argv[2:]]; t=(a[1]-a[0])/a[4]; k=(a[3]-a[2])/a[4]; n=a[5]; print(f'{{\"label\": \"{l}\", \"mailveil_cpu_s\": {t:.2f}, \"kernel_s\": {k:.2f}, \"messages\": {n}, \"us_per_message\": {t/n*1e6:.0f}}}')" \
        "$1" "$2" "$3" "$4" "$5" "$TICKS" "$((MESSAGES * ROUNDS))"
}
cpu_line cpu "$MV_CPU_START" "$(cpu_ticks "$MV_PID")" "$MV_SYS_START" "$(sys_ticks "$MV_PID")" | tee -a "$OUT"
if [ -n "$BASELINE" ]; then
    cpu_line cpu-baseline "$BL_CPU_START" "$(cpu_ticks "$BL_PID")" "$BL_SYS_START" "$(sys_ticks "$BL_PID")" | tee -a "$OUT"
fi
cpu_line cpu-haproxy "$HA_CPU_START" "$(cpu_ticks "$HA_PID")" "$HA_SYS_START" "$(sys_ticks "$HA_PID")" | tee -a "$OUT"

log "latency: $ROUNDS rounds x 200 messages, one session, one message at a time"
for round in $(seq 1 "$ROUNDS"); do
    for p in $(round_order "$round" "${PEERS[@]}"); do
        python3 "$HERE/bench_smtp.py" --host "${HOST[$p]}" --port "${PORT[$p]}" --sessions 1 \
            --messages 200 --size "$SIZE" --label "$p-seq" | tee -a "$OUT"
    done
done

if [ -n "$BASELINE" ]; then
    log "latency against the baseline: $ROUNDS rounds x 200 messages, one session each, alternating message by message"
    for round in $(seq 1 "$ROUNDS"); do
        python3 "$HERE/bench_smtp.py" --host 127.0.0.1 --port "${PORT[mailveil]}" --versus-port "${PORT[baseline]}" \
            --messages 200 --size "$SIZE" --label versus | tee -a "$OUT"
    done
fi

log "peak RSS relaying one 25 MB message (fresh mailveil process)"
stop_mailveil
start_mailveil
PID="$(cat "$W/mailveil.pid")"
RSS_BEFORE_KB="$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")"
python3 "$HERE/bench_big.py" --host 127.0.0.2 --port 10465 --label direct-25MB | tee -a "$OUT"
python3 "$HERE/bench_big.py" --host 127.0.0.1 --port 11465 --label mailveil-25MB | tee -a "$OUT"
HWM_KB="$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")"
echo "{\"label\": \"rss\", \"rss_before_kb\": $RSS_BEFORE_KB, \"peak_kb\": $HWM_KB}" | tee -a "$OUT"
if [ -n "$BASELINE" ]; then
    log "peak RSS relaying one 25 MB message (fresh baseline process)"
    stop_baseline
    start_baseline
    PID="$(cat "$W/baseline.pid")"
    RSS_BEFORE_KB="$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")"
    python3 "$HERE/bench_big.py" --host 127.0.0.1 --port 15465 --label baseline-25MB | tee -a "$OUT"
    HWM_KB="$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")"
    echo "{\"label\": \"rss-baseline\", \"rss_before_kb\": $RSS_BEFORE_KB, \"peak_kb\": $HWM_KB}" | tee -a "$OUT"
fi

declared() { # port
    PORT_UNDER_TEST="$1" python3 - <<'PY'
import os, smtplib, ssl
ctx = ssl.create_default_context(cafile=os.environ["CA"])
s = smtplib.SMTP_SSL("127.0.0.1", int(os.environ["PORT_UNDER_TEST"]), context=ctx, timeout=60)
s.login("alice@example.test", "alice-pw")
for _ in range(50):
    s.mail("alice@example.test", ["SIZE=36000000"])
    s.rcpt("sink@example.test")
    code, _ = s.data(b"Subject: small\r\n\r\nsmall body\r\n")
    assert code == 250, code
s.quit()
PY
}
log "peak RSS for 50 small messages that each declare SIZE=36000000 (fresh process)"
stop_mailveil
start_mailveil
PID="$(cat "$W/mailveil.pid")"
declared 11465
DECLARED_KB="$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")"
echo "{\"label\": \"declared\", \"peak_kb\": $DECLARED_KB}" | tee -a "$OUT"
if [ -n "$BASELINE" ]; then
    log "peak RSS for 50 small messages that each declare SIZE=36000000 (fresh baseline process)"
    stop_baseline
    start_baseline
    PID="$(cat "$W/baseline.pid")"
    declared 15465
    DECLARED_KB="$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")"
    echo "{\"label\": \"declared-baseline\", \"peak_kb\": $DECLARED_KB}" | tee -a "$OUT"
fi

SESSIONS="$SESSIONS" python3 - "$OUT" <<'PY'
import json, os, statistics, sys
SESSIONS = os.environ["SESSIONS"]
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(label, key):
    return statistics.median(r[key] for r in rows if r["label"] == label)
baseline = any(r["label"] == "baseline" for r in rows)
errors = sum(r.get("errors", 0) for r in rows if not r["label"].startswith(("baseline", "haproxy")))
d_tp, m_tp = med("direct", "msgs_per_s"), med("mailveil", "msgs_per_s")
d50, m50 = med("direct", "p50_ms"), med("mailveil", "p50_ms")
d99, m99 = med("direct", "p99_ms"), med("mailveil", "p99_ms")
rss = next(r for r in rows if r["label"] == "rss")
big = next(r for r in rows if r["label"] == "mailveil-25MB")
def vs_baseline(direct, label, key, mailveil, kind):
    # One more line under mailveil's: the baseline binary's median against
    # direct, and mailveil against the baseline (same run, same rounds).
    if not baseline:
        return
    b = med(label, key)
    if kind == "ratio":
        # The k-th rows of mailveil and the baseline are the same round.
        ms = [r[key] for r in rows if r["label"] == "mailveil"]
        bs = [r[key] for r in rows if r["label"] == label]
        paired = statistics.median(x / y for x, y in zip(ms, bs))
        print(f"  baseline            {direct:10.1f} {b:12.1f}   ratio {b / direct:.3f}; mailveil/baseline {mailveil / b:.3f} "
              f"(ratio of medians), {paired:.3f} (median of the rounds' ratios)")
    else:
        print(f"  baseline            {direct:10.3f} {b:12.3f}   added {b - direct:+.3f} ms; mailveil/baseline {mailveil / b:.3f}")
print()
print("median over rounds        direct     mailveil")
print(f"messages/s            {d_tp:10.1f} {m_tp:12.1f}   ratio {m_tp / d_tp:.3f} (goal >= 0.95, issue 21)")
vs_baseline(d_tp, "baseline", "msgs_per_s", m_tp, "ratio")
h_tp = med("haproxy", "msgs_per_s")
print(f"  haproxy (TLS legs only) {h_tp:8.1f}   ratio {h_tp / d_tp:.3f}; mailveil/haproxy {m_tp / h_tp:.3f}")
print(f"p50 per message (ms)  {d50:10.3f} {m50:12.3f}   added {m50 - d50:+.3f} ms ({SESSIONS} sessions)")
vs_baseline(d50, "baseline", "p50_ms", m50, "added")
print(f"p99 per message (ms)  {d99:10.3f} {m99:12.3f}   added {m99 - d99:+.3f} ms ({SESSIONS} sessions)")
vs_baseline(d99, "baseline", "p99_ms", m99, "added")
s50, q50 = med("direct-seq", "p50_ms"), med("mailveil-seq", "p50_ms")
s99, q99 = med("direct-seq", "p99_ms"), med("mailveil-seq", "p99_ms")
print(f"p50, one session (ms) {s50:10.3f} {q50:12.3f}   added {q50 - s50:+.3f} ms (goal <= 0.5 ms, issue 21)")
h50 = med("haproxy-seq", "p50_ms")
print(f"  haproxy (TLS legs only) {h50:8.3f}   added {h50 - s50:+.3f} ms")
vs_baseline(s50, "baseline-seq", "p50_ms", q50, "added")
print(f"p99, one session (ms) {s99:10.3f} {q99:12.3f}   added {q99 - s99:+.3f} ms")
vs_baseline(s99, "baseline-seq", "p99_ms", q99, "added")
versus = [r for r in rows if r["label"] == "versus"]
if versus:
    # Each round pairs the two under the same noise: the median of the
    # rounds' ratios, not the ratio of two medians from different rounds.
    a, b = statistics.median(r["p50_ms"] for r in versus), statistics.median(r["versus_p50_ms"] for r in versus)
    ratio = statistics.median(r["ratio"] for r in versus)
    print(f"p50, one session, alternating message by message with the baseline: "
          f"mailveil {a:.3f} ms, baseline {b:.3f} ms (medians); mailveil/baseline {ratio:.3f} (median of the rounds' ratios)")
print(f"errors: {errors}")
if baseline:
    print(f"baseline errors: {sum(r.get('errors', 0) for r in rows if r['label'].startswith('baseline'))}")
print(f"haproxy errors: {sum(r.get('errors', 0) for r in rows if r['label'].startswith('haproxy'))}")
cpu = next(r for r in rows if r["label"] == "cpu")
print(f"mailveil CPU during throughput rounds: {cpu['mailveil_cpu_s']} s ({cpu['kernel_s']} s in the kernel) "
      f"for {cpu['messages']} messages = {cpu['us_per_message']} us/message")
if baseline:
    bcpu = next(r for r in rows if r["label"] == "cpu-baseline")
    ratio = cpu["mailveil_cpu_s"] / bcpu["mailveil_cpu_s"] if bcpu["mailveil_cpu_s"] else float("nan")
    print(f"baseline CPU during throughput rounds: {bcpu['mailveil_cpu_s']} s ({bcpu['kernel_s']} s in the kernel) "
          f"for {bcpu['messages']} messages = {bcpu['us_per_message']} us/message; mailveil/baseline {ratio:.3f}")
hcpu = next(r for r in rows if r["label"] == "cpu-haproxy")
print(f"haproxy CPU during throughput rounds: {hcpu['mailveil_cpu_s']} s ({hcpu['kernel_s']} s in the kernel) "
      f"for {hcpu['messages']} messages = {hcpu['us_per_message']} us/message; "
      f"mailveil/haproxy {cpu['mailveil_cpu_s'] / hcpu['mailveil_cpu_s'] if hcpu['mailveil_cpu_s'] else float('nan'):.3f}")
peak_mb = rss["peak_kb"] / 1024
msg_mb = big["bytes"] / 1024 / 1024
print(f"25 MB message: peak RSS {peak_mb:.1f} MiB (start {rss['rss_before_kb'] / 1024:.1f} MiB) "
      f"= {peak_mb / msg_mb:.2f}x the {msg_mb:.1f} MiB message; above the start "
      f"{(peak_mb - rss['rss_before_kb'] / 1024) / msg_mb:.2f}x (goal <= 1.3x, issue 21)")
if baseline:
    brss = next(r for r in rows if r["label"] == "rss-baseline")
    bpeak_mb = brss["peak_kb"] / 1024
    print(f"25 MB message, baseline: peak RSS {bpeak_mb:.1f} MiB (start {brss['rss_before_kb'] / 1024:.1f} MiB) "
          f"= {bpeak_mb / msg_mb:.2f}x the {msg_mb:.1f} MiB message; mailveil/baseline {peak_mb / bpeak_mb:.3f}")
declared = next(r for r in rows if r["label"] == "declared")
print(f"50 small messages each declaring SIZE=36000000: peak RSS {declared['peak_kb'] / 1024:.1f} MiB")
if baseline:
    bdeclared = next(r for r in rows if r["label"] == "declared-baseline")
    print(f"50 small messages each declaring SIZE=36000000, baseline: peak RSS {bdeclared['peak_kb'] / 1024:.1f} MiB; "
          f"mailveil/baseline {declared['peak_kb'] / bdeclared['peak_kb']:.3f}")
PY
