#!/usr/bin/env bash
# IMAP benchmark: the same Dovecot measured directly, through mailveil and
# through nginx's mail proxy in one run, rounds alternating so that machine
# noise hits all three. Prints figures only; nothing passes or fails on
# speed. Needs root (sets up like run.sh, installs nginx + libnginx-mod-mail).
#
#   bash tests/interop/bench_imap.sh          # 200 x 1 MB FETCH, 3 rounds, 1,000 IDLE sessions
#   ROUNDS=5 IDLE_SESSIONS=2000 bash tests/interop/bench_imap.sh
#
# Paths compared (all on loopback):
#   direct   client -TLS-> Dovecot 127.0.0.2:10993
#   mailveil client -TLS-> mailveil 127.0.0.1:11993 -TLS-> Dovecot 127.0.0.2:10993
#   nginx    client -TLS-> nginx 127.0.0.1:12993 -plain-> Dovecot 127.0.0.1:10143
#            (nginx's mail proxy cannot speak TLS to its backend: one TLS hop
#            fewer than mailveil, and not a setup mailveil would accept)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"
ROUNDS="${ROUNDS:-3}"
IDLE_SESSIONS="${IDLE_SESSIONS:-1000}"
MIXED_SESSIONS="${MIXED_SESSIONS:-4}"
MIXED_COMMANDS="${MIXED_COMMANDS:-2700}"
log() { printf '== %s\n' "$*"; }

# 1,000 sessions through a relay are 2,000 sockets in mailveil and 1,000 in
# the client: raise the soft limit as far as the hard one allows.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_SESSIONS * 2 + 200)) ]; then
    echo "open-file limit $(ulimit -n) is too low for $IDLE_SESSIONS sessions" >&2
    exit 2
fi

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"
if ! [ -f /usr/lib/nginx/modules/ngx_mail_module.so ]; then
    log "installing nginx with its mail module"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx libnginx-mod-mail >/dev/null
fi
OUT="$W/bench-imap.jsonl"
: > "$OUT"
B=(python3 "$HERE/bench_imap.py")
export BENCH_USER=bob@example.test BENCH_PASSWORD=bob-pw

# ------------------------------------------------------------------ nginx
mkdir -p "$W/nginx/logs"
cat > "$W/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
worker_processes 2;
pid $W/nginx/nginx.pid;
error_log $W/log/nginx.err warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $W/nginx/body;
    # auth_http endpoint: every login goes to Dovecot's plain-text port on
    # the same address (which Dovecot treats as a secured connection).
    server {
        listen 127.0.0.1:12080;
        location /auth {
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port 10143;
            return 204;
        }
    }
}
mail {
    server_name localhost;
    auth_http 127.0.0.1:12080/auth;
    proxy_pass_error_message on;
    imap_auth plain login;
    imap_capabilities IMAP4rev1 LITERAL+ IDLE UIDPLUS MOVE;
    ssl_certificate $W/tls/cert.pem;
    ssl_certificate_key $W/tls/key.pem;
    server {
        listen 127.0.0.1:12993 ssl;
        protocol imap;
    }
}
CONF
nginx -t -p "$W/nginx" -c "$W/nginx/nginx.conf" 2>/dev/null
nginx -p "$W/nginx" -c "$W/nginx/nginx.conf"
stop_nginx() { [ -f "$W/nginx/nginx.pid" ] && kill "$(cat "$W/nginx/nginx.pid")" 2>/dev/null || true; }
trap 'stop_nginx; stop_all' EXIT
wait_port 127.0.0.1 12993

declare -A HOST=([direct]=127.0.0.2 [mailveil]=127.0.0.1 [nginx]=127.0.0.1)
declare -A PORT=([direct]=10993 [mailveil]=11993 [nginx]=12993)
PEERS=(direct mailveil nginx)

# ------------------------------------------------------------------ data
log "seeding 200 x 1 MB and 200 x 4 KB messages"
"${B[@]}" seed --host 127.0.0.2 --port 10993 --mailbox BenchBig --count 200 --size 1000000 >/dev/null
"${B[@]}" seed --host 127.0.0.2 --port 10993 --mailbox BenchSmall --count 200 --size 4000 >/dev/null
for p in "${PEERS[@]}"; do
    "${B[@]}" fetch --host "${HOST[$p]}" --port "${PORT[$p]}" --mailbox BenchSmall --label "warm-$p" >/dev/null
done

# ------------------------------------------------------------------ throughput
log "bulk FETCH: UID FETCH 1:* BODY.PEEK[] of 200 x 1 MB, $ROUNDS rounds"
for _ in $(seq 1 "$ROUNDS"); do
    for p in "${PEERS[@]}"; do
        "${B[@]}" fetch --host "${HOST[$p]}" --port "${PORT[$p]}" --mailbox BenchBig --label "$p" | tee -a "$OUT"
    done
done
log "bulk FETCH, 4 sessions at once, $ROUNDS rounds"
for _ in $(seq 1 "$ROUNDS"); do
    for p in "${PEERS[@]}"; do
        "${B[@]}" fetch --host "${HOST[$p]}" --port "${PORT[$p]}" --mailbox BenchBig --sessions 4 --label "$p-x4" | tee -a "$OUT"
    done
done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
MV_PID="$(cat "$W/mailveil.pid")"
MV_CPU=0
MV_COMMANDS=0
for sessions in "$MIXED_SESSIONS" 1; do
    log "mixed workload: $sessions session(s) x $MIXED_COMMANDS commands, $ROUNDS rounds"
    for _ in $(seq 1 "$ROUNDS"); do
        for p in "${PEERS[@]}"; do
            before="$(cpu_ticks "$MV_PID")"
            "${B[@]}" mixed --host "${HOST[$p]}" --port "${PORT[$p]}" --mailbox BenchSmall \
                --sessions "$sessions" --commands "$MIXED_COMMANDS" --label "$p-s$sessions" | tee -a "$OUT"
            if [ "$p" = mailveil ]; then
                MV_CPU=$((MV_CPU + $(cpu_ticks "$MV_PID") - before))
                MV_COMMANDS=$((MV_COMMANDS + sessions * MIXED_COMMANDS))
            fi
        done
    done
done
python3 -c 'import sys; t=int(sys.argv[1])/int(sys.argv[2]); n=int(sys.argv[3]); print("{\"label\": \"mailveil-cpu\", \"test\": \"cpu\", \"cpu_s\": %.2f, \"commands\": %d, \"us_per_command\": %.0f}" % (t, n, t / n * 1e6))' \
    "$MV_CPU" "$(getconf CLK_TCK)" "$MV_COMMANDS" | tee -a "$OUT"

# ------------------------------------------------------------------ memory
rss_kib() { # pids... -> summed VmRSS in KiB
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}
nginx_workers() { pgrep -P "$(cat "$W/nginx/nginx.pid")"; }

idle_memory() { # label port pid-command
    local label="$1" port="$2" pidcmd="$3" base after line
    # Warm-up: a few sessions first, so start-up allocations are not counted.
    coproc WARM { "${B[@]}" idle --port "$port" --sessions 20 --label warm; }
    read -r line <&"${WARM[0]}"
    exec {WARM[1]}>&-
    wait "$WARM_PID" || true
    sleep 1
    # shellcheck disable=SC2046
    base="$(rss_kib $($pidcmd))"
    coproc HOLD { "${B[@]}" idle --port "$port" --sessions "$IDLE_SESSIONS" --label "$label"; }
    read -r line <&"${HOLD[0]}"
    sleep 2
    # shellcheck disable=SC2046
    after="$(rss_kib $($pidcmd))"
    exec {HOLD[1]}>&-
    wait "$HOLD_PID" || true
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); b,a=int(sys.argv[2]),int(sys.argv[3]); n=max(r["sessions"],1); r.update(rss_before_kib=b, rss_after_kib=a, kib_per_session=round((a-b)/n,1)); print(json.dumps(r))' \
        "$line" "$base" "$after" | tee -a "$OUT"
}

log "memory: $IDLE_SESSIONS authenticated sessions in IDLE at once (fresh processes)"
stop_mailveil
start_mailveil
idle_memory mailveil-idle 11993 "cat $W/mailveil.pid"
idle_memory nginx-idle 12993 nginx_workers

# ------------------------------------------------------------------ summary
log "summary (medians over rounds; ratios against direct in this run)"
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(test, label, key):
    v = [r[key] for r in rows if r.get("test") == test and r["label"] == label]
    return statistics.median(v) if v else None
mixed_sessions = sorted({r["sessions"] for r in rows if r.get("test") == "mixed"}, reverse=True)
for test, key, unit, suffix in [("fetch", "MB_per_s", "MB/s", ""), ("fetch", "MB_per_s", "MB/s", "-x4")] + \
        [("mixed", "commands_per_s", "commands/s", f"-s{n}") for n in mixed_sessions]:
    d = med(test, "direct" + suffix, key)
    for peer in ("direct", "mailveil", "nginx"):
        v = med(test, peer + suffix, key)
        if v is not None:
            print(f"{test}{suffix or ''} {peer:9s} {v:9.1f} {unit}  ({v / d:.2f}x direct)")
for r in rows:
    if r.get("test") == "cpu":
        print(f"mailveil CPU in the mixed runs: {r['us_per_command']} us per relayed command")
    if r.get("test") == "idle":
        print(f"idle {r['label']}: {r['sessions']} sessions, {r['errors']} errors, "
              f"{r['kib_per_session']} KiB per session (RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB)")
PY
