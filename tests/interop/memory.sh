#!/usr/bin/env bash
# Memory image after sessions end: once an SMTP or IMAP session is over, no
# copy of that session's data that mailveil's own buffers held may be left in
# the process's memory. Runs canary sessions through mailveil to the end,
# takes a core of the running process with gcore (gdb), and counts the
# canaries in it. Prints a table of counts, one line per check and a closing
# "memory: N passed, N failed". Needs root (sets up like run.sh; installs gdb).
#
#   bash tests/interop/memory.sh
#   MAILVEIL_BIN=/tmp/old/target/release/mailveil bash tests/interop/memory.sh
#
# Every kind of a session's data is counted, in any form: passwords (right
# and wrong), the login and envelope address, the subjects and a body line,
# the original and the rewritten Message-IDs, a SEARCH term, a mailbox name,
# and the AUTH PLAIN string (the SMTP client's, and the one mailveil makes
# from an IMAP LOGIN). Each must be gone, which takes the zeroizing global
# allocator for the copies that rustls, mail-send and tokio keep (see
# RELIABILITY.md for the counts without it).
# Positive control: an SMTP session (bob, to bob) held open in the middle of
# DATA while the core is taken; its unstuffed line and its login must be
# found, or a zero above would mean nothing. It is opened before the canary
# sessions, not after them: a session started after they ended allocates its
# buffers where theirs were freed and may overwrite (hide) what they left.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"
if ! command -v gcore >/dev/null 2>&1; then
    log "installing gdb (gcore)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q gdb >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q gdb >/dev/null
    }
fi

CORE_PREFIX="$W/mailveil.core"
stop_control() {
    if [ -n "${CTL_PID:-}" ]; then
        kill "$CTL_PID" 2>/dev/null || true
        wait "$CTL_PID" 2>/dev/null || true
        CTL_PID=
    fi
}
remove_core() { rm -f "$CORE_PREFIX".*; }
trap 'stop_control; remove_core; stop_all' EXIT

R="$(openssl rand -hex 8)"
export R
MV_PID="$(cat "$W/mailveil.pid")"
log "mailveil: $(describe_bin "$MAILVEIL"), pid $MV_PID; canaries end in $R"

log "positive control: an SMTP session held open in the middle of DATA until the core is taken"
coproc CONTROL { python3 "$HERE/memory.py" control; }
CTL_PID="$CONTROL_PID"
read -r ready <&"${CONTROL[0]}"
[ "$ready" = ready ] || { echo "control session did not start: $ready" >&2; exit 1; }
sleep 1

log "canary sessions: one SMTP submission, one IMAP session (LOGIN, SEARCH, CREATE/DELETE, APPEND), both to the end"
python3 "$HERE/memory.py" sessions "$W/memory-canaries.json"
sleep 3
kill -0 "$CTL_PID" || { echo "the control session ended early" >&2; exit 1; }

log "gcore of mailveil (pid $MV_PID)"
remove_core
# -a: every mapping, including any marked MADV_DONTDUMP.
gcore -a -o "$CORE_PREFIX" "$MV_PID" >"$W/log/gcore.out" 2>&1
CORE="$CORE_PREFIX.$MV_PID"
[ -s "$CORE" ] || { echo "gcore wrote no core (see $W/log/gcore.out)" >&2; exit 1; }
stop_control
kill -0 "$MV_PID" || { echo "mailveil died during gcore" >&2; exit 1; }

log "counting canaries in the core"
python3 "$HERE/memory.py" count "$CORE" "$W/memory-canaries.json" "$W/memory-counts.tsv"
remove_core

while IFS=$'\t' read -r role count name; do
    case "$role" in
        zero)
            if [ "$count" = 0 ]; then ok "$name: none left after the session ended"
            else bad "$name: $count left after the session ended"; fi ;;
        control)
            if [ "$count" -ge 1 ]; then ok "$name: $count found while the session is open"
            else bad "$name: none found while the session is open (the test sees nothing)"; fi ;;
    esac
done < "$W/memory-counts.tsv"

echo
echo "memory: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
