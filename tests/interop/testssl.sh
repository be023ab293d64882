#!/usr/bin/env bash
# testssl.sh (the Debian package) against every mailveil listener: SMTP and
# IMAP, implicit TLS and STARTTLS. Prints every finding rated above INFO and
# a closing "testssl: N passed, N failed"; a listener fails if any finding
# is rated above LOW. Needs root (sets up like run.sh).
#
#   bash tests/interop/testssl.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W="${MAILVEIL_INTEROP_DIR:-/tmp/mailveil-interop}"

# shellcheck source=tests/interop/lib.sh
source "$HERE/lib.sh"
if ! command -v testssl >/dev/null 2>&1; then
    log "installing testssl.sh"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q testssl.sh bsdextrautils dnsutils >/dev/null
fi
dpkg-query -W -f='testssl.sh ${Version}\n' testssl.sh

mkdir -p "$W/testssl"
SPECS=("11465 smtp-implicit" "11587 smtp-starttls smtp" "11993 imap-implicit" "11143 imap-starttls imap" "11443 alpn-implicit")
# The scans run at once: each spends most of its time waiting on
# handshakes, and one after another they took 10 minutes.
pids=()
for spec in "${SPECS[@]}"; do
    read -r port label starttls <<<"$spec"
    json="$W/testssl/$label.json"
    rm -f "$json"
    args=(--quiet --color 0 --warnings off --sneaky --add-ca "$CA" --jsonfile "$json")
    [ -n "${starttls:-}" ] && args+=(--starttls "$starttls")
    # By IP literal: no name to resolve, nothing leaves loopback.
    testssl "${args[@]}" "127.0.0.1:$port" > "$W/testssl/$label.txt" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
for spec in "${SPECS[@]}"; do
    read -r port label starttls <<<"$spec"
    log "testssl: $label (127.0.0.1:$port)"
    json="$W/testssl/$label.json"
    if ! [ -s "$json" ]; then
        bad "$label: no result (see $W/testssl/$label.txt)"
        continue
    fi
    verdict="$(python3 - "$json" <<'PY'
import json, sys
rank = {"OK": 0, "INFO": 0, "DEBUG": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4, "WARN": 0}
findings = json.load(open(sys.argv[1]))
worst = 0
for f in findings:
    r = rank.get(f.get("severity", "INFO"), 0)
    if r >= 1 and f.get("id") != "scanProblem":
        print(f"  {f['severity']:8s} {f['id']}: {f['finding']}")
    if f.get("severity") == "WARN" or f.get("id") == "scanProblem":
        print(f"  {f.get('severity')} {f['id']}: {f['finding']}")
    worst = max(worst, r)
protocols = [f["id"] for f in findings if f["id"] in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3") and f["finding"].startswith("offered")]
print(f"  protocols offered: {' '.join(protocols) or 'none found'}")
print("VERDICT", ["nothing above INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"][worst])
PY
)"
    echo "$verdict" | grep -v '^VERDICT'
    worst="$(echo "$verdict" | sed -n 's/^VERDICT //p')"
    case "$worst" in
        "nothing above INFO"|LOW) ok "$label: worst finding $worst" ;;
        *) bad "$label: worst finding $worst" ;;
    esac
done
echo "testssl: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
