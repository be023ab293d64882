#!/usr/bin/env bash
# SMTP submission benchmark: the same Postfix measured directly and through
# mailveil in one run (alternating rounds, so machine noise hits both), plus
# mailveil's peak RSS while relaying one 25 MB message. Prints figures only;
# nothing here passes or fails on speed. Needs root (sets up like run.sh).
#
#   bash tests/interop/bench.sh            # defaults: 8 sessions, 800 messages, 5 rounds
#   SESSIONS=16 MESSAGES=1600 ROUNDS=5 bash tests/interop/bench.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"
SESSIONS="${SESSIONS:-8}"
MESSAGES="${MESSAGES:-800}"
ROUNDS="${ROUNDS:-5}"
SIZE="${SIZE:-4096}"
log() { printf '== %s\n' "$*"; }

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"
OUT="$W/bench.jsonl"
: > "$OUT"

log "warm-up"
python3 "$HERE/bench_smtp.py" --host 127.0.0.2 --port 10465 --sessions 2 --messages 40 --label warm >/dev/null
python3 "$HERE/bench_smtp.py" --host 127.0.0.1 --port 11465 --sessions 2 --messages 40 --label warm >/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat"; }
TICKS="$(getconf CLK_TCK)"

log "throughput and latency: $ROUNDS rounds x $MESSAGES messages of ~$SIZE bytes over $SESSIONS sessions"
MV_PID="$(cat "$W/mailveil.pid")"
MV_CPU_START="$(cpu_ticks "$MV_PID")"
MV_SYS_START="$(sys_ticks "$MV_PID")"
for round in $(seq 1 "$ROUNDS"); do
    python3 "$HERE/bench_smtp.py" --host 127.0.0.2 --port 10465 --sessions "$SESSIONS" \
        --messages "$MESSAGES" --size "$SIZE" --label direct | tee -a "$OUT"
    python3 "$HERE/bench_smtp.py" --host 127.0.0.1 --port 11465 --sessions "$SESSIONS" \
        --messages "$MESSAGES" --size "$SIZE" --label mailveil | tee -a "$OUT"
done

MV_CPU_END="$(cpu_ticks "$MV_PID")"
MV_SYS_END="$(sys_ticks "$MV_PID")"
python3 -c "import sys; a=[int(x) for x in sys.argv[1:]]; t=(a[1]-a[0])/a[4]; k=(a[3]-a[2])/a[4]; n=a[5]; print(f'{{\"label\": \"cpu\", \"mailveil_cpu_s\": {t:.2f}, \"kernel_s\": {k:.2f}, \"messages\": {n}, \"us_per_message\": {t/n*1e6:.0f}}}')" \
    "$MV_CPU_START" "$MV_CPU_END" "$MV_SYS_START" "$MV_SYS_END" "$TICKS" "$((MESSAGES * ROUNDS))" | tee -a "$OUT"

log "latency: $ROUNDS rounds x 200 messages, one session, one message at a time"
for round in $(seq 1 "$ROUNDS"); do
    python3 "$HERE/bench_smtp.py" --host 127.0.0.2 --port 10465 --sessions 1 \
        --messages 200 --size "$SIZE" --label direct-seq | tee -a "$OUT"
    python3 "$HERE/bench_smtp.py" --host 127.0.0.1 --port 11465 --sessions 1 \
        --messages 200 --size "$SIZE" --label mailveil-seq | tee -a "$OUT"
done

log "peak RSS relaying one 25 MB message (fresh mailveil process)"
stop_mailveil
start_mailveil
PID="$(cat "$W/mailveil.pid")"
RSS_BEFORE_KB="$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")"
python3 "$HERE/bench_big.py" --host 127.0.0.2 --port 10465 --label direct-25MB | tee -a "$OUT"
python3 "$HERE/bench_big.py" --host 127.0.0.1 --port 11465 --label mailveil-25MB | tee -a "$OUT"
HWM_KB="$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")"
echo "{\"label\": \"rss\", \"rss_before_kb\": $RSS_BEFORE_KB, \"peak_kb\": $HWM_KB}" | tee -a "$OUT"

log "peak RSS for 50 small messages that each declare SIZE=36000000 (fresh process)"
stop_mailveil
start_mailveil
PID="$(cat "$W/mailveil.pid")"
python3 - <<'PY'
import os, smtplib, ssl
ctx = ssl.create_default_context(cafile=os.environ["CA"])
s = smtplib.SMTP_SSL("127.0.0.1", 11465, context=ctx, timeout=60)
s.login("alice@example.test", "alice-pw")
for _ in range(50):
    s.mail("alice@example.test", ["SIZE=36000000"])
    s.rcpt("sink@example.test")
    code, _ = s.data(b"Subject: small\r\n\r\nsmall body\r\n")
    assert code == 250, code
s.quit()
PY
DECLARED_KB="$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")"
echo "{\"label\": \"declared\", \"peak_kb\": $DECLARED_KB}" | tee -a "$OUT"

SESSIONS="$SESSIONS" python3 - "$OUT" <<'PY'
import json, os, statistics, sys
SESSIONS = os.environ["SESSIONS"]
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(label, key):
    return statistics.median(r[key] for r in rows if r["label"] == label)
errors = sum(r.get("errors", 0) for r in rows)
d_tp, m_tp = med("direct", "msgs_per_s"), med("mailveil", "msgs_per_s")
d50, m50 = med("direct", "p50_ms"), med("mailveil", "p50_ms")
d99, m99 = med("direct", "p99_ms"), med("mailveil", "p99_ms")
rss = next(r for r in rows if r["label"] == "rss")
big = next(r for r in rows if r["label"] == "mailveil-25MB")
print()
print("median over rounds        direct     mailveil")
print(f"messages/s            {d_tp:10.1f} {m_tp:12.1f}   ratio {m_tp / d_tp:.3f} (goal >= 0.9)")
print(f"p50 per message (ms)  {d50:10.3f} {m50:12.3f}   added {m50 - d50:+.3f} ms ({SESSIONS} sessions)")
print(f"p99 per message (ms)  {d99:10.3f} {m99:12.3f}   added {m99 - d99:+.3f} ms ({SESSIONS} sessions)")
s50, q50 = med("direct-seq", "p50_ms"), med("mailveil-seq", "p50_ms")
s99, q99 = med("direct-seq", "p99_ms"), med("mailveil-seq", "p99_ms")
print(f"p50, one session (ms) {s50:10.3f} {q50:12.3f}   added {q50 - s50:+.3f} ms (goal <= 1 ms)")
print(f"p99, one session (ms) {s99:10.3f} {q99:12.3f}   added {q99 - s99:+.3f} ms")
print(f"errors: {errors}")
cpu = next(r for r in rows if r["label"] == "cpu")
print(f"mailveil CPU during throughput rounds: {cpu['mailveil_cpu_s']} s ({cpu['kernel_s']} s in the kernel) "
      f"for {cpu['messages']} messages = {cpu['us_per_message']} us/message")
peak_mb = rss["peak_kb"] / 1024
msg_mb = big["bytes"] / 1024 / 1024
print(f"25 MB message: peak RSS {peak_mb:.1f} MiB (start {rss['rss_before_kb'] / 1024:.1f} MiB) "
      f"= {peak_mb / msg_mb:.2f}x the {msg_mb:.1f} MiB message (goal <= 2x)")
declared = next(r for r in rows if r["label"] == "declared")
print(f"50 small messages each declaring SIZE=36000000: peak RSS {declared['peak_kb'] / 1024:.1f} MiB")
PY
