#!/usr/bin/env bash
# IMAP benchmark: the same Dovecot measured directly, through mailveil and
# through nginx's mail proxy in one run, rounds alternating so that machine
# noise hits all three. Prints figures only; nothing passes or fails on
# speed. Needs root (sets up like run.sh, installs nginx + libnginx-mod-mail).
#
#   bash tests/interop/bench_imap.sh          # 200 x 1 MB FETCH, 5 rounds, 1,000 and 5,000 IDLE sessions
#   ROUNDS=7 IDLE_SESSIONS="1000 2000" bash tests/interop/bench_imap.sh
#   BASELINE_BIN=/tmp/old/target/release/mailveil bash tests/interop/bench_imap.sh
#   IDLE_ONLY=1 bash tests/interop/bench_imap.sh   # the idle-memory runs alone
#
# Paths compared (all on loopback):
#   direct   client -TLS-> Dovecot 127.0.0.2:10993
#   mailveil client -TLS-> mailveil 127.0.0.1:11993 -TLS-> Dovecot 127.0.0.2:10993
#   nginx    client -TLS-> nginx 127.0.0.1:12993 -plain-> Dovecot 127.0.0.1:10143
#            (nginx's mail proxy cannot speak TLS to its backend: one TLS hop
#            fewer than mailveil, and not a setup mailveil would accept)
#   haproxy  client -TLS-> HAProxy 127.0.0.1:12994 -TLS-> Dovecot 127.0.0.2:10993
#            (TCP mode: two TLS legs and nothing else, the floor for any
#            relay that ends the client's TLS and opens its own)
#   baseline client -TLS-> mailveil from $BASELINE_BIN 127.0.0.1:15993 -TLS-> Dovecot
#            (only with BASELINE_BIN: another mailveil binary, same config,
#            measured in the same rounds; the summary adds mailveil/baseline,
#            and a mixed run on one session to each, alternating command by
#            command, with each command's median latency)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"
ROUNDS="${ROUNDS:-5}"
IDLE_SESSIONS="${IDLE_SESSIONS:-1000 5000}"
MOST_IDLE="$(printf '%s\n' $IDLE_SESSIONS | sort -n | tail -1)"
MIXED_SESSIONS="${MIXED_SESSIONS:-4}"
MIXED_COMMANDS="${MIXED_COMMANDS:-2700}"
# The mixed runs: MIXED_SESSIONS sessions, then one (once if they are the same).
MIXED_SIZES="$(printf '%s\n' "$MIXED_SESSIONS" 1 | awk '!seen[$0]++' | tr '\n' ' ')"

# 1,000 sessions through a relay are 2,000 sockets in mailveil and 1,000 in
# the client: raise the soft limit as far as the hard one allows.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((MOST_IDLE * 2 + 200)) ]; then
    echo "open-file limit $(ulimit -n) is too low for $MOST_IDLE sessions" >&2
    exit 2
fi
# dovecot.conf.in has room for 12,000 sessions of one user from one address.
if [ "$MOST_IDLE" -gt 11000 ]; then
    echo "IDLE_SESSIONS: $MOST_IDLE is more than dovecot.conf.in has room for" >&2
    exit 2
fi
export HAPROXY_MAXCONN=$((MOST_IDLE + 200))

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
worker_rlimit_nofile 20000;
pid $W/nginx/nginx.pid;
error_log $W/log/nginx.err warn;
events { worker_connections 16384; }
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
start_nginx() {
    nginx -p "$W/nginx" -c "$W/nginx/nginx.conf"
    wait_port 127.0.0.1 12993
}
stop_nginx() { stop_pidfile "$W/nginx/nginx.pid"; }
trap 'stop_nginx; stop_all' EXIT
start_nginx

log "mailveil: $(describe_bin "$MAILVEIL")"
declare -A HOST=([direct]=127.0.0.2 [mailveil]=127.0.0.1 [baseline]=127.0.0.1 [nginx]=127.0.0.1 [haproxy]=127.0.0.1)
declare -A PORT=([direct]=10993 [mailveil]=11993 [baseline]=15993 [nginx]=12993 [haproxy]=12994)
start_tls_haproxy
PEERS=(direct mailveil nginx haproxy)
if [ -n "$BASELINE" ]; then
    start_baseline
    log "baseline: $(describe_bin "$BASELINE") on 127.0.0.1:15993"
    PEERS=(direct mailveil baseline nginx haproxy)
fi

if [ -z "${IDLE_ONLY:-}" ]; then # IDLE_ONLY=1: the idle-memory runs alone
# ------------------------------------------------------------------ data
log "seeding 200 x 1 MB and 200 x 4 KB messages"
"${B[@]}" seed --host 127.0.0.2 --port 10993 --mailbox BenchBig --count 200 --size 1000000 >/dev/null
"${B[@]}" seed --host 127.0.0.2 --port 10993 --mailbox BenchSmall --count 200 --size 4000 >/dev/null
for p in "${PEERS[@]}"; do
    "${B[@]}" fetch --host "${HOST[$p]}" --port "${PORT[$p]}" --mailbox BenchSmall --label "warm-$p" >/dev/null
done

# ------------------------------------------------------------------ throughput
log "bulk FETCH: UID FETCH 1:* BODY.PEEK[] of 200 x 1 MB, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
    for p in $(round_order "$round" "${PEERS[@]}"); do
        "${B[@]}" fetch --host "${HOST[$p]}" --port "${PORT[$p]}" --mailbox BenchBig --label "$p" | tee -a "$OUT"
    done
done
log "bulk FETCH, 4 sessions at once, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
    for p in $(round_order "$round" "${PEERS[@]}"); do
        "${B[@]}" fetch --host "${HOST[$p]}" --port "${PORT[$p]}" --mailbox BenchBig --sessions 4 --label "$p-x4" | tee -a "$OUT"
    done
done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Relay CPU per mixed run size, for the relays (not direct, not nginx's
# workers): ticks, commands and wall time (ns) summed over the rounds, by
# "<peer> <sessions>".
declare -A RELAY_PID=([mailveil]="$(cat "$W/mailveil.pid")" [haproxy]="$(cat "$W/haproxy-bench.pid")")
[ -n "$BASELINE" ] && RELAY_PID[baseline]="$(cat "$W/baseline.pid")"
declare -A CPU COMMANDS WALL
for sessions in $MIXED_SIZES; do
    log "mixed workload: $sessions session(s) x $MIXED_COMMANDS commands, $ROUNDS rounds"
    for round in $(seq 1 "$ROUNDS"); do
        for p in $(round_order "$round" "${PEERS[@]}"); do
            pid="${RELAY_PID[$p]:-}"
            [ -n "$pid" ] && before="$(cpu_ticks "$pid")"
            started="$(date +%s%N)"
            "${B[@]}" mixed --host "${HOST[$p]}" --port "${PORT[$p]}" --mailbox BenchSmall \
                --sessions "$sessions" --commands "$MIXED_COMMANDS" --label "$p-s$sessions" | tee -a "$OUT"
            if [ -n "$pid" ]; then
                k="$p $sessions"
                WALL[$k]=$((${WALL[$k]:-0} + $(date +%s%N) - started))
                CPU[$k]=$((${CPU[$k]:-0} + $(cpu_ticks "$pid") - before))
                COMMANDS[$k]=$((${COMMANDS[$k]:-0} + sessions * MIXED_COMMANDS))
            fi
        done
    done
done
if [ -n "$BASELINE" ]; then
    log "mixed workload against the baseline: $ROUNDS rounds x 900 commands, one session each, alternating command by command"
    for _ in $(seq 1 "$ROUNDS"); do
        "${B[@]}" versus --host 127.0.0.1 --port "${PORT[mailveil]}" --versus-port "${PORT[baseline]}" --mailbox BenchSmall \
            --commands 900 --label versus | tee -a "$OUT"
    done
fi
cpu_line() { # label sessions ticks commands wall-ns
    python3 -c 'import json, sys; l, s, t, n, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / int(sys.argv[6]), int(sys.argv[4]), int(sys.argv[5]) / 1e9; print(json.dumps({"label": l, "test": "cpu", "sessions": s, "cpu_s": round(t, 2), "wall_s": round(w, 2), "cpu_percent": round(100 * t / w, 1), "commands": n, "us_per_command": round(t / n * 1e6)}))' \
        "$1" "$2" "$3" "$4" "$5" "$(getconf CLK_TCK)"
}
for sessions in $MIXED_SIZES; do
    for p in mailveil baseline haproxy; do
        k="$p $sessions"
        [ -n "${CPU[$k]:-}" ] || continue
        cpu_line "$p-cpu-s$sessions" "$sessions" "${CPU[$k]}" "${COMMANDS[$k]}" "${WALL[$k]}" | tee -a "$OUT"
    done
done
fi # IDLE_ONLY

# ------------------------------------------------------------------ memory
rss_kib() { # pids... -> summed VmRSS in KiB
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}
nginx_workers() { pgrep -P "$(cat "$W/nginx/nginx.pid")"; }

idle_memory() { # label port pid-command sessions
    local label="$1" port="$2" pidcmd="$3" sessions="$4" base after line
    # Warm-up: a few sessions first, so start-up allocations are not counted.
    coproc WARM { "${B[@]}" idle --port "$port" --sessions 20 --label warm; }
    read -r line <&"${WARM[0]}"
    exec {WARM[1]}>&-
    wait "$WARM_PID" || true
    sleep 1
    # shellcheck disable=SC2046
    base="$(rss_kib $($pidcmd))"
    coproc HOLD { "${B[@]}" idle --port "$port" --sessions "$sessions" --label "$label"; }
    read -r line <&"${HOLD[0]}"
    sleep 2
    # shellcheck disable=SC2046
    after="$(rss_kib $($pidcmd))"
    exec {HOLD[1]}>&-
    wait "$HOLD_PID" || true
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); b,a=int(sys.argv[2]),int(sys.argv[3]); n=max(r["sessions"],1); r.update(rss_before_kib=b, rss_after_kib=a, kib_per_session=round((a-b)/n,1)); print(json.dumps(r))' \
        "$line" "$base" "$after" | tee -a "$OUT"
}

for n in $IDLE_SESSIONS; do
    log "memory: $n authenticated sessions in IDLE at once (fresh processes for every peer)"
    stop_mailveil
    start_mailveil
    idle_memory "mailveil-idle-$n" 11993 "cat $W/mailveil.pid" "$n"
    if [ -n "$BASELINE" ]; then
        stop_baseline
        start_baseline
        idle_memory "baseline-idle-$n" 15993 "cat $W/baseline.pid" "$n"
    fi
    stop_nginx
    start_nginx
    idle_memory "nginx-idle-$n" 12993 nginx_workers "$n"
    stop_pidfile "$W/haproxy-bench.pid"
    start_tls_haproxy
    idle_memory "haproxy-idle-$n" 12994 "cat $W/haproxy-bench.pid" "$n"
done

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
    for peer in ("direct", "mailveil", "baseline", "nginx", "haproxy"):
        v = med(test, peer + suffix, key)
        if v is not None:
            cpu = ""
            if test == "mixed" and peer in ("mailveil", "baseline", "haproxy"):
                c = next((r for r in rows if r.get("test") == "cpu"
                          and r["label"] == f"{peer}-cpu{suffix}"), None)
                if c:
                    cpu = (f"  relay CPU {c['us_per_command']} us/command, "
                           f"{c['cpu_percent']}% of one core while its rounds ran")
            print(f"{test}{suffix or ''} {peer:9s} {v:9.1f} {unit}  ({v / d:.2f}x direct){cpu}")
    m, b = med(test, "mailveil" + suffix, key), med(test, "baseline" + suffix, key)
    if m is not None and b is not None:
        # The k-th rows of the two are the same round: pairs under the
        # same noise. Both statistics are printed; neither is hidden.
        ms = [r[key] for r in rows if r.get("test") == test and r["label"] == "mailveil" + suffix]
        bs = [r[key] for r in rows if r.get("test") == test and r["label"] == "baseline" + suffix]
        paired = statistics.median(x / y for x, y in zip(ms, bs))
        print(f"{test}{suffix or ''} mailveil/baseline {m / b:.3f} (ratio of medians), "
              f"{paired:.3f} (median of the rounds' ratios)")
versus = [r for r in rows if r.get("test") == "versus"]
if versus:
    ratio = statistics.median(r["ratio"] for r in versus)
    print(f"mixed, one session each, alternating command by command: mailveil/baseline {ratio:.3f} "
          f"(commands/s over the whole run; median of the rounds)")
    names = list(versus[0]["median_us"])
    per = {}
    for name in names:
        a = statistics.median(r["median_us"][name][0] for r in versus)
        b = statistics.median(r["median_us"][name][1] for r in versus)
        per[name] = a / b
        print(f"  {name:15s} latency mailveil {a:7.1f} us  baseline {b:7.1f} us  mailveil/baseline {a / b:.3f}")
    print(f"  median over the command types of the latency ratio: {statistics.median(per.values()):.3f} "
          f"(below 1: mailveil faster)")
by_label = {r["label"]: r for r in rows}
for r in rows:
    if r.get("test") == "cpu" and r["label"].startswith("baseline-cpu"):
        m = by_label[r["label"].replace("baseline", "mailveil", 1)]
        ratio = m["us_per_command"] / r["us_per_command"] if r["us_per_command"] else float("nan")
        print(f"CPU per relayed command, {r['sessions']} session(s): mailveil {m['us_per_command']} us, "
              f"baseline {r['us_per_command']} us; mailveil/baseline {ratio:.3f}")
    if r.get("test") == "idle":
        print(f"idle {r['label']}: {r['sessions']} sessions, {r['errors']} errors, "
              f"{r['kib_per_session']} KiB per session (RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB)")
for n in sorted({int(r["label"].rsplit("-", 1)[1]) for r in rows
                 if r.get("test") == "idle" and r["label"].rsplit("-", 1)[-1].isdigit()}):
    m, b, x, h = (by_label.get(f"{p}-idle-{n}") for p in ("mailveil", "baseline", "nginx", "haproxy"))
    if m and x and x["kib_per_session"]:
        print(f"idle, {n} sessions: mailveil/nginx {m['kib_per_session'] / x['kib_per_session']:.3f} (KiB per session; goal <= 1)")
    if m and h and h["kib_per_session"]:
        print(f"idle, {n} sessions: mailveil/haproxy {m['kib_per_session'] / h['kib_per_session']:.3f} (KiB per session; haproxy has two TLS legs)")
    if m and b and b["kib_per_session"]:
        print(f"idle, {n} sessions: mailveil/baseline {m['kib_per_session'] / b['kib_per_session']:.3f} (KiB per session)")
PY
