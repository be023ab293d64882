#!/usr/bin/env bash
# CPU profiles of the relay under each benchmark workload, as flame graphs:
# perf (software clock: no hardware counters here) samples the running
# release build with DWARF call graphs (from .eh_frame: no debug build
# needed), and inferno draws one SVG per workload into docs/.
#
#   bash tests/interop/profile.sh             # docs/flame-{smtp,imap-mixed,imap-fetch}.svg
#
# Workloads, each against the relay on loopback (set up like bench.sh):
#   smtp        8 sessions x 500 messages of ~4 KB (bench_smtp.py)
#   imap-mixed  4 sessions x 2,700 commands, one at a time (bench_imap.py mixed)
#   imap-fetch  UID FETCH 1:* BODY.PEEK[] of 50 x 1 MB in 4 sessions (bench_imap.py fetch)
# Needs root (perf, and it sets up like run.sh); installs linux-perf and
# inferno (cargo install) when missing. Prints the top functions of each.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"
OUTDIR="${OUTDIR:-$REPO/docs}"

command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
command -v inferno-flamegraph >/dev/null || cargo install --quiet --locked inferno

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"
export BENCH_USER=bob@example.test BENCH_PASSWORD=bob-pw
B=(python3 "$HERE/bench_imap.py")
PID="$(cat "$W/mailveil.pid")"
mkdir -p "$OUTDIR"

log "seeding 200 x 4 KB and 50 x 1 MB messages"
"${B[@]}" seed --host 127.0.0.2 --port 10993 --mailbox BenchSmall --count 200 --size 4000 >/dev/null
"${B[@]}" seed --host 127.0.0.2 --port 10993 --mailbox BenchBig --count 50 --size 1000000 >/dev/null
"${B[@]}" fetch --host 127.0.0.1 --port 11993 --mailbox BenchSmall --label warm >/dev/null

profile() { # name command...: samples the relay while the command runs
    local name="$1"; shift
    log "profiling: $name"
    perf record -q -e cpu-clock -F 999 --call-graph dwarf,32768 -p "$PID" -o "$W/perf-$name.data" \
        2>"$W/log/perf-$name.err" &
    local perf_pid=$!
    sleep 1
    "$@" | tail -1
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    perf script -i "$W/perf-$name.data" 2>/dev/null | inferno-collapse-perf > "$W/perf-$name.folded"
    inferno-flamegraph --title "mailveil: $name ($(git -C "$REPO" rev-parse --short HEAD))" \
        --width 1600 < "$W/perf-$name.folded" > "$OUTDIR/flame-$name.svg"
    python3 - "$W/perf-$name.folded" <<'PY'
import collections, sys
total, own = 0, collections.Counter()
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1)
    n = int(n)
    total += n
    own[stack.split(";")[-1]] += n
# cpu-clock samples carry their period (ns): the weights are CPU time.
print(f"  {total / 1e6:.0f} ms of relay CPU sampled; where it was spent (self time):")
for f, n in own.most_common(12):
    print(f"  {100 * n / total:5.1f}%  {f[:110]}")
PY
    rm -f "$W/perf-$name.data"
}

profile smtp python3 "$HERE/bench_smtp.py" --host 127.0.0.1 --port 11465 --sessions 8 --messages 4000 --label mailveil
profile imap-mixed "${B[@]}" mixed --host 127.0.0.1 --port 11993 --mailbox BenchSmall --sessions 4 --commands 2700 --label mailveil
profile imap-fetch "${B[@]}" fetch --host 127.0.0.1 --port 11993 --mailbox BenchBig --sessions 4 --label mailveil
log "flame graphs in $OUTDIR: $(cd "$OUTDIR" && ls flame-*.svg | tr '\n' ' ')"
