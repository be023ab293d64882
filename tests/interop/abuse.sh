#!/usr/bin/env bash
# Load and abuse against the real Postfix and Dovecot through mailveil
# (issue 6). Prints figures and one line per check, closing with
# "abuse: N passed, N failed". Correctness is checked (zero errors, the
# honest user gets through, attackers are throttled); speed is only printed.
# Needs root (sets up like run.sh).
#
#   bash tests/interop/abuse.sh
#   IDLE_SESSIONS=5000 SMTP_SESSIONS=500 TRICKLERS=1000 ATTEMPTS=10000 bash tests/interop/abuse.sh
#
# Phases, each with a fresh mailveil:
#   load       500 concurrent SMTP sessions submitting at once, then 5,000
#              IMAP sessions idling at once; errors and peak RSS.
#   slowloris  1,000 trickling connections from one address, then from
#              1,000 addresses (plain and implicit TLS), with mailveil's
#              default limits; an honest user from another address logs in
#              and sends meanwhile, timed against the same steps unloaded.
#   stuffing   10,000 wrong-password logins from one address (SMTP, then
#              IMAP), default limits except no failure delay (the delay only
#              slows an attacker further); how many reached the provider; an
#              honest user from another address meanwhile.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"
IDLE_SESSIONS="${IDLE_SESSIONS:-5000}"
SMTP_SESSIONS="${SMTP_SESSIONS:-500}"
TRICKLERS="${TRICKLERS:-1000}"
ATTEMPTS="${ATTEMPTS:-10000}"

# 5,000 sessions through the relay are 10,000 sockets in mailveil.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_SESSIONS * 2 + 500)) ]; then
    echo "open-file limit $(ulimit -n) is too low for $IDLE_SESSIONS sessions" >&2
    exit 2
fi
# dovecot.conf.in has room for 12,000 sessions of one user from one
# address: login processes of 6,000 connections each, 12,000 imap processes.
if [ "$IDLE_SESSIONS" -gt 11000 ]; then
    echo "IDLE_SESSIONS=$IDLE_SESSIONS is more than dovecot.conf.in has room for" >&2
    exit 2
fi

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"
A=(python3 "$HERE/abuse.py")
OUT="$W/abuse.jsonl"
: > "$OUT"
# The providers must not be the bottleneck: Postfix takes 100 sessions and
# 50 per client address by default, Dovecot one process per login.
postconf -c "$W/postfix" -e default_process_limit=1000 smtpd_client_connection_count_limit=0 \
    smtpd_client_connection_rate_limit=0 smtpd_client_auth_rate_limit=0 >/dev/null
postfix -c "$W/postfix" reload >/dev/null 2>&1
# Dovecot's config (dovecot.conf.in) already has room for the idle sessions
# of the one test user from the relay's address (checked above).

# mailveil with [limits] as in the interop config (raised) or as shipped.
use_limits() { # extra [limits] lines; "defaults" for the shipped defaults
    stop_mailveil
    render_config
    if [ "$1" = defaults ]; then
        # Drop the interop suite's raised limits: the shipped defaults apply.
        sed -i '/^max_connections = /d; /^max_connections_per_prefix = /d; /^connections_per_prefix_per_minute = /d; /^messages_per_account_per_hour = /d; /^max_transactions_per_account = /d' "$W/mailveil.toml"
        shift
    fi
    local setting
    for setting in "$@"; do
        sed -i "/^${setting%% =*} = /d" "$W/mailveil.toml"
        printf '%s\n' "$setting" >> "$W/mailveil.toml"
    done
    start_mailveil
}
peak_kib() { awk '/^VmHWM/ {print $2}' "/proc/$(cat "$W/mailveil.pid")/status"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$(cat "$W/mailveil.pid")/status"; }
# mailveil's CPU time so far (user + system), in hundredths of a second.
cpu_cs() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 100 / hz)}' "/proc/$(cat "$W/mailveil.pid")/stat"; }
jget() { python3 -c 'import json,sys; r=json.loads(sys.argv[1]); v=eval(sys.argv[2], {}, {"r": r}); print(v)' "$1" "$2"; }

# ------------------------------------------------------------------ load
log "load: $SMTP_SESSIONS concurrent SMTP sessions submitting at once"
use_limits "max_connections = $((IDLE_SESSIONS + 500))"
delivered_before="$(find "$W/mail" -path '*/new/*' -type f | wc -l)"
line="$("${A[@]}" smtp-load --port 11465 --sessions "$SMTP_SESSIONS")"
echo "$line" | tee -a "$OUT"
# Postfix delivers through LMTP after it has said 250: wait for the files.
for _ in $(seq 1 120); do
    delivered=$(( $(find "$W/mail" -path '*/new/*' -type f | wc -l) - delivered_before ))
    [ "$delivered" -ge "$SMTP_SESSIONS" ] && break
    sleep 0.5
done
peak="$(peak_kib)"
echo "{\"test\": \"smtp-load-rss\", \"peak_kib\": $peak, \"delivered\": $delivered}" | tee -a "$OUT"
if [ "$(jget "$line" 'r["errors"]')" = 0 ] && [ "$delivered" = "$SMTP_SESSIONS" ]; then
    ok "$SMTP_SESSIONS concurrent submissions: 0 errors, $delivered delivered, peak RSS $((peak / 1024)) MiB"
else
    bad "$SMTP_SESSIONS concurrent submissions: $line, $delivered delivered"
fi

log "load: $IDLE_SESSIONS IMAP sessions in IDLE at once"
use_limits "max_connections = $((IDLE_SESSIONS + 500))"
base="$(rss_kib)"
export BENCH_USER=bob@example.test BENCH_PASSWORD=bob-pw
coproc HOLD { python3 "$HERE/bench_imap.py" idle --port 11993 --sessions "$IDLE_SESSIONS" --label idle; }
read -r line <&"${HOLD[0]}"
sleep 2
after="$(rss_kib)"
# While they idle, an honest newcomer is still served.
honest="$("${A[@]}" honest --source 127.0.0.10 --label during-idle)"
exec {HOLD[1]}>&-
wait "$HOLD_PID" || true
peak="$(peak_kib)"
echo "{\"test\": \"imap-idle-rss\", \"rss_before_kib\": $base, \"rss_idle_kib\": $after, \"peak_kib\": $peak}" | tee -a "$OUT"
echo "$line" | tee -a "$OUT"
echo "$honest" | tee -a "$OUT"
if [ "$(jget "$line" 'r["errors"]')" = 0 ] && [ "$(jget "$line" 'r["sessions"]')" = "$IDLE_SESSIONS" ]; then
    ok "$IDLE_SESSIONS IMAP sessions idling: 0 errors, RSS $((base / 1024)) -> $((after / 1024)) MiB, $(( (after - base) / IDLE_SESSIONS )) KiB per session, peak $((peak / 1024)) MiB"
else
    bad "$IDLE_SESSIONS IMAP sessions idling: $line"
fi
[ "$(jget "$honest" 'r["ok"]')" = True ] && ok "an honest user is served while $IDLE_SESSIONS sessions idle" \
    || bad "honest user during IDLE load: $honest"

# ------------------------------------------------------------------ slowloris
log "slowloris: baseline for the honest user, no attack"
use_limits defaults
base="$("${A[@]}" honest --source 127.0.0.10 --label unloaded)"
echo "$base" | tee -a "$OUT"
for spec in "1 0 11587" "$TRICKLERS 0 11587" "$TRICKLERS 1 11465"; do
    read -r nsrc tls port <<<"$spec"
    log "slowloris: $TRICKLERS trickling connections from $nsrc address(es), port $port (tls=$tls)"
    use_limits defaults
    line="$("${A[@]}" slowloris --port "$port" --tls "$tls" --count "$TRICKLERS" --sources "$nsrc" \
        --hold 45 --honest-source 127.0.0.10 --label "from-$nsrc-tls-$tls")"
    echo "$line" | tee -a "$OUT"
    # A fresh mailveil per variant: its high-water mark is the attack's.
    peak="$(peak_kib)"
    echo "{\"test\": \"slowloris-rss\", \"label\": \"from-$nsrc-tls-$tls\", \"peak_kib\": $peak}" | tee -a "$OUT"
    if [ "$(jget "$line" 'r["honest"]["ok"]')" = True ]; then
        ok "slowloris x$TRICKLERS from $nsrc address(es) (tls=$tls): honest user logged in in $(jget "$line" 'r["honest"]["smtp_login_s"]') s, sent in $(jget "$line" 'r["honest"]["smtp_send_s"]') s (unloaded: $(jget "$base" 'r["smtp_send_s"]') s); mailveil peak RSS $((peak / 1024)) MiB"
    else
        bad "slowloris x$TRICKLERS from $nsrc address(es) (tls=$tls): honest user failed: $line"
    fi
    if [ "$(jget "$line" 'r.get("still_open", 0)')" = 0 ]; then
        ok "no trickling connection outlived the ${TRICKLERS}-connection attack's 45 s (pre-auth deadline, eviction or refusal)"
    else
        # Not a failure by itself when the connections were admitted within
        # the limits: report how many were still held.
        printf 'note - %s trickling connections still open after 45 s\n' "$(jget "$line" 'r["still_open"]')"
    fi
done

# ------------------------------------------------------------------ descriptors
# The shipped max_connections (1,000) under a 256-descriptor limit: mailveil
# must lower its cap to fit (and say so), so that at the cap it evicts a
# session that has not logged in instead of failing to accept. 400 idle TLS
# connections from 30 addresses, then an honest user.
log "descriptors: 256 open files, the default max_connections, 400 idle connections from 30 addresses"
use_limits defaults
stop_mailveil
prlimit --nofile=256:256 "$MAILVEIL" run --config "$W/mailveil.toml" >"$W/log/mailveil.out" 2>"$W/log/mailveil.err" &
echo $! > "$W/mailveil.pid"
wait_port 127.0.0.1 11465; wait_port 127.0.0.1 11993
line="$("${A[@]}" slowloris --port 11465 --tls 1 --count 400 --sources 30 --hold 45 \
    --honest-source 127.0.0.10 --label nofile-256)"
echo "$line" | tee -a "$OUT"
if grep -q "carries about 64 connections" "$W/log/mailveil.err"; then
    ok "under a 256-descriptor limit mailveil serves at most 64 connections, and says so at start"
else
    bad "no start-up warning about the descriptor limit: $(grep -i 'open-file' "$W/log/mailveil.err" || true)"
fi
if [ "$(jget "$line" 'r["honest"]["ok"]')" = True ]; then
    ok "256 descriptors, 400 idle connections: honest user logged in in $(jget "$line" 'r["honest"]["smtp_login_s"]') s, sent in $(jget "$line" 'r["honest"]["smtp_send_s"]') s"
else
    bad "256 descriptors, 400 idle connections: honest user failed: $line"
fi

# ------------------------------------------------------------------ stuffing
for proto in smtp imap; do
    port=11465; [ "$proto" = imap ] && port=11993
    log "credential stuffing: $ATTEMPTS wrong passwords over $proto from 127.0.0.9"
    use_limits defaults "auth_failure_delay_ms = 0"
    coproc STUFF { "${A[@]}" stuffing --port "$port" --proto "$proto" --attempts "$ATTEMPTS" \
        --source 127.0.0.9 --connections 20; }
    sleep 3
    honest="$("${A[@]}" honest --source 127.0.0.10 --label "during-$proto-stuffing")"
    read -r line <&"${STUFF[0]}"
    wait "$STUFF_PID" || true
    # Logins the provider judged, by the names this phase used. The
    # provider may judge a login long after it was sent (Dovecot delays
    # answers to an address that fails): wait until the count is steady.
    judged() { grep -c "passwd-file($proto-victim" "$W/log/dovecot.log" || true; }
    reached="$(judged)"
    for _ in $(seq 1 15); do
        sleep 2
        [ "$(judged)" = "$reached" ] && break
        reached="$(judged)"
    done
    echo "$line" | tee -a "$OUT"
    echo "$honest" | tee -a "$OUT"
    echo "{\"test\": \"stuffing-provider\", \"proto\": \"$proto\", \"failed_logins_at_provider\": $reached}" | tee -a "$OUT"
    logged_in="$(jget "$line" 'r["replies"].get("LOGGED IN", 0)')"
    # The allowance (20 per prefix by default) plus the logins a prefix may
    # have in flight while the provider judges them (4).
    if [ "$reached" -le 24 ] && [ "$logged_in" = 0 ]; then
        ok "$ATTEMPTS wrong $proto logins from one address: $reached reached the provider, $(jget "$line" 'r["attempts_per_s"]') attempts/s answered"
    else
        bad "$ATTEMPTS wrong $proto logins: $reached reached the provider: $line"
    fi
    # What the provider holds against the relay's address (Dovecot's
    # per-address login penalty: every user behind the relay shares it).
    doveadm -c "$W/dovecot/dovecot.conf" penalty 2>/dev/null | sed 's/^/  provider penalty: /' || true
    if [ "$(jget "$honest" 'r["ok"]')" = True ]; then
        ok "an honest user from another address gets through during $proto stuffing (SMTP login $(jget "$honest" 'r["smtp_login_s"]') s, IMAP login $(jget "$honest" 'r["imap_login_select_s"]') s)"
    elif grep -q -E 'Too many|relay is full' <<<"$honest"; then
        bad "mailveil refused the honest user during $proto stuffing: $honest"
    else
        # Refused by the provider, not by mailveil: the failures that did
        # reach the provider count against the relay's address there.
        printf 'note - during %s stuffing the provider, not mailveil, failed the honest user: %s\n' "$proto" "$honest"
        ok "mailveil itself let the honest user through during $proto stuffing"
    fi
done

# ------------------------------------------------------------------ lockout against the owner
# Someone who knows alice's login guesses her password, from one address,
# then from 50. alice has logged in from her own network (127.0.0.77)
# before: from there she must still log in and send, during the attack and
# right after it, within 5 s. A network she has not used (127.0.0.88) is
# locked out of her login: the control that the lock was real.
# Dovecot's per-address login penalty (every failure from the relay's one
# address delays the next logins from it, up to 15 s) is the provider's, not
# mailveil's: each round starts with a fresh Dovecot, and a slow or failed
# login that mailveil did not refuse is reported, not failed.
fresh_provider() {
    dovecot -c "$W/dovecot/dovecot.conf" stop >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do pgrep -f "dovecot -c $W/dovecot" >/dev/null || break; sleep 0.1; done
    dovecot -c "$W/dovecot/dovecot.conf"
    wait_port 127.0.0.2 10993
    sleep 1
}
for nsrc in 1 50; do
    log "stuffing alice's login from $nsrc address(es); alice logs in from her own network"
    fresh_provider
    use_limits defaults "auth_failure_delay_ms = 0"
    first=$(( $(wc -l < "$W/log/dovecot.log") + 1 ))
    before="$("${A[@]}" honest --owner --source 127.0.0.77 --label "owner-before-$nsrc")"
    echo "$before" | tee -a "$OUT"
    # Over IMAP: Dovecot judges every guess itself (over SMTP, Postfix gives
    # up on Dovecot's delayed answers and the guess counts as temporary, so
    # the login might never be locked and the control below would say nothing).
    coproc STUFF { "${A[@]}" stuffing --port 11993 --proto imap --attempts 300 --login alice@example.test \
        --source 127.0.0.66 --sources "$nsrc" --connections "$(( nsrc > 5 ? nsrc : 5 ))"; }
    sleep 3
    during="$("${A[@]}" honest --owner --source 127.0.0.77 --label "owner-during-$nsrc")"
    read -r line <&"${STUFF[0]}"
    wait "$STUFF_PID" || true
    after="$("${A[@]}" honest --owner --source 127.0.0.77 --label "owner-after-$nsrc")"
    elsewhere="$("${A[@]}" honest --owner --source 127.0.0.88 --label "owner-new-network-$nsrc")"
    printf '%s\n' "$line" "$during" "$after" "$elsewhere" | tee -a "$OUT"
    judged="$(tail -n "+$first" "$W/log/dovecot.log" | grep -c "passwd-file(alice@example.test.*Password mismatch" || true)"
    echo "{\"test\": \"owner-stuffing-provider\", \"sources\": $nsrc, \"failed_logins_at_provider\": $judged}" | tee -a "$OUT"
    printf 'note - stuffing alice from %s address(es): %s wrong passwords reached the provider\n' "$nsrc" "$judged"
    logged_in="$(jget "$line" 'r["replies"].get("LOGGED IN", 0)')"
    for phase in during after; do
        res="${!phase}"
        what="alice from her own network, $phase stuffing of her login from $nsrc address(es)"
        if grep -q "Too many failed logins" <<<"$res"; then
            bad "$what: mailveil locked her out: $res"
        elif [ "$(jget "$res" 'r["ok"]')" = True ] &&
             [ "$(jget "$res" 'int(max(r["smtp_send_s"], r["imap_login_select_s"]) <= 5)')" = 1 ]; then
            ok "$what: sent in $(jget "$res" 'r["smtp_send_s"]') s, IMAP in $(jget "$res" 'r["imap_login_select_s"]') s (before: $(jget "$before" 'r.get("smtp_send_s")') s)"
        else
            printf 'note - %s: mailveil let her through, the provider slowed or failed her: %s\n' "$what" "$res"
            ok "$what: mailveil did not lock her out"
        fi
    done
    if [ "$logged_in" = 0 ] && grep -q "Too many failed logins" <<<"$elsewhere"; then
        ok "the guesses never logged in, and a network alice has not used is locked out of her login"
    else
        bad "stuffing alice's login from $nsrc address(es): $line; new network: $elsewhere"
    fi
done

# ------------------------------------------------------------------ IPv6 flood
# One IPv6 user holds a /48: 65,536 /64s. 2001:db8::/32 is routed to
# loopback and the client binds each socket to its own /64 (IPV6_FREEBIND).
# 110,000 connections from 110,000 /64s in two /48s, opened and closed at
# once, as fast as the client goes (a prune interval is 60 s). mailveil
# counts IPv6 per /64, /56 and /48 and refuses on the worst, so the flood
# is stopped at its two /48s, the /64 table stays small, and refusals past
# ten a minute per /48 are closed without a TLS handshake. An honest IPv4
# user and an honest IPv6 user from another /48 log in and send after
# 100,000 /64s have gone.
log "IPv6 flood: 110,000 /64s over two /48s, opened and closed; honest IPv4 and IPv6 users"
ip -6 route replace local 2001:db8::/32 dev lo
use_limits defaults
stop_mailveil
python3 - "$W/mailveil.toml" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
listeners = "".join(
    f'[[listen]]\nprotocol = "{proto}"\naddress = "[::1]:{port}"\ntls = "implicit"\n\n'
    for proto, port in [("smtp", 11466), ("imap", 11994)])
open(path, "w").write(text.replace("[tls]\n", listeners + "[tls]\n", 1))
PY
start_mailveil
wait_port ::1 11466; wait_port ::1 11994
base="$(rss_kib)"
cpu0="$(cpu_cs)"
line="$("${A[@]}" flood6 --port 11466 --count 110000 --concurrency 500)"
peak="$(peak_kib)"
cpu=$(( $(cpu_cs) - cpu0 ))
ip -6 route del local 2001:db8::/32 dev lo || true
echo "$line" | tee -a "$OUT"
echo "{\"test\": \"flood6-relay\", \"rss_before_kib\": $base, \"peak_kib\": $peak, \"cpu_s\": $((cpu / 100)).$(printf %02d $((cpu % 100)))}" | tee -a "$OUT"
flood_s="$(jget "$line" 'r["flood_s"]')"
if [ "$(jget "$line" 'int(r["flood_s"] <= 60)')" = 1 ]; then
    ok "IPv6 flood: 110,000 /64s in two /48s in $flood_s s ($(jget "$line" 'r["per_s"]')/s), within one 60 s prune interval; mailveil peak RSS $((peak / 1024)) MiB, $((cpu / 100)).$(printf %02d $((cpu % 100))) s of CPU"
else
    printf 'note - the IPv6 flood took %s s, longer than one 60 s prune interval (the client is the limit)\n' "$flood_s"
fi
for fam in v4 v6; do
    if [ "$(jget "$line" "r['honest']['$fam']['ok']")" = True ]; then
        ok "IPv6 flood: an honest $fam user logged in and sent in $(jget "$line" "r['honest']['$fam']['smtp_send_s']") s, IMAP in $(jget "$line" "r['honest']['$fam']['imap_login_select_s']") s, $(jget "$line" "r['honest']['at_s']") s into the flood"
    else
        bad "IPv6 flood: honest $fam user failed: $line"
    fi
done

# ------------------------------------------------------------------ memory pinning
# One account (bob) logs in from 20 addresses, one session each, and starts
# a 35 MiB message in every one at once, sent as fast as it can go, then
# trickles one byte every 4 minutes. With the shipped defaults: three
# transactions per account, so 17 get 452 at MAIL; 128 MiB of messages at
# most; and the transfer floor over a sliding window, so the three that
# got in are cut off about command_timeout_secs (300 s) after their burst
# instead of after the ~20 hours their burst would buy on an average. An
# honest user (alice) sends meanwhile. mailveil's RSS is read at the
# burst's end and its peak after; its budget is max_buffered_message_bytes
# plus what the sessions themselves hold (README, "Memory").
log "memory pinning: one account from 20 addresses, 35 MiB each fast, then 1 byte every 4 minutes"
use_limits defaults
base="$(rss_kib)"
coproc PIN { "${A[@]}" pin --port 11465 --sources 20 --size $((35 << 20)) --every 240 --hold 420 \
    --honest-source 127.0.0.10; }
read -r mark <&"${PIN[0]}"
sleep 2
held="$(rss_kib)"
read -r line <&"${PIN[0]}"
wait "$PIN_PID" || true
peak="$(peak_kib)"
printf '%s\n' "$mark" "$line" | tee -a "$OUT"
echo "{\"test\": \"pin-rss\", \"rss_before_kib\": $base, \"rss_held_kib\": $held, \"peak_kib\": $peak, \"rss_after_kib\": $(rss_kib)}" | tee -a "$OUT"
budget_kib=$(( (128 + 32) * 1024 ))
if [ $((peak - base)) -le "$budget_kib" ]; then
    ok "memory pinning: RSS $((base / 1024)) MiB before, $((held / 1024)) MiB while held, peak $((peak / 1024)) MiB: $(( (peak - base) / 1024 )) MiB over the start, within 128 MiB of messages + 32 MiB"
else
    bad "memory pinning: peak RSS $((peak / 1024)) MiB is $(( (peak - base) / 1024 )) MiB over the start (budget 160 MiB)"
fi
refused="$(jget "$line" 'sum(v for k, v in r["replies"].items() if k.startswith("MAIL: 452 4.3.1"))')"
sent="$(jget "$line" 'r.get("bursts_sent", 0)')"
if [ "$refused" = 17 ] && [ "$sent" = 3 ]; then
    ok "memory pinning: 3 transactions of the account went ahead, the other 17 got 452 4.3.1 at MAIL"
else
    bad "memory pinning: $sent bursts sent, $refused refused at MAIL: $line"
fi
cut="$(jget "$line" 'sum(v for k, v in r["replies"].items() if "too slowly" in k)')"
lasted="$(jget "$line" 'max(r["trickle_lasted_s"] or [0])')"
if [ "$cut" = 3 ] && [ "$(jget "$line" 'int(max(r["trickle_lasted_s"] or [999]) < 330)')" = 1 ]; then
    ok "memory pinning: each trickle after a 35 MiB burst was cut within $lasted s (421, too slowly), not after hours"
else
    bad "memory pinning: trickles not cut in time: $line"
fi
for phase in during after; do
    if [ "$(jget "$line" "r['honest_$phase']['ok']")" = True ]; then
        ok "memory pinning: an honest user sent $phase the pinning in $(jget "$line" "r['honest_$phase']['smtp_send_s']") s"
    else
        bad "memory pinning: honest user failed $phase: $line"
    fi
done

echo "abuse: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
