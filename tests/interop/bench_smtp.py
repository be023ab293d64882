"""SMTP submission load generator: M concurrent authenticated TLS sessions
each sending N/M messages; prints messages/s and per-message latency
(MAIL FROM to the final reply) as one JSON line.

With --versus-port Q it compares two relays instead: one session to each,
the N messages sent alternately to one and the other (the order swapped
every message), so that the machine's noise falls on both alike. Prints the
median latency of each and their ratio.

Used by bench.sh to measure the same Postfix directly and through mailveil in
one run. Bounded: a fixed number of messages, then it exits."""

import argparse
import json
import os
import smtplib
import ssl
import statistics
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--host", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--sessions", type=int, default=8)
ap.add_argument("--messages", type=int, default=400)
ap.add_argument("--size", type=int, default=4096)
ap.add_argument("--label", required=True)
ap.add_argument("--versus-port", type=int, help="a second relay on --host, compared message by message")
args = ap.parse_args()

ctx = ssl.create_default_context(cafile=os.environ["CA"])
line = b"x" * 74 + b"\r\n"
body = line * max(1, args.size // len(line))
message = (b"From: Alice <alice@example.test>\r\nTo: sink@example.test\r\nSubject: bench\r\n"
           b"Date: Mon, 23 Nov 2026 15:00:00 -0800\r\nUser-Agent: bench\r\n\r\n" + body)
per_session = args.messages // args.sessions
latencies = []
errors = []
lock = threading.Lock()


def worker():
    try:
        s = smtplib.SMTP_SSL(args.host, args.port, context=ctx, timeout=60)
        s.login("alice@example.test", "alice-pw")
        mine = []
        for _ in range(per_session):
            t0 = time.perf_counter()
            s.sendmail("alice@example.test", ["sink@example.test"], message)
            mine.append(time.perf_counter() - t0)
        s.quit()
        with lock:
            latencies.extend(mine)
    except Exception as e:  # counted, reported
        with lock:
            errors.append(type(e).__name__)


def versus():
    ports = {"a": args.port, "b": args.versus_port}
    sessions = {}
    for k, port in ports.items():
        sessions[k] = smtplib.SMTP_SSL(args.host, port, context=ctx, timeout=60)
        sessions[k].login("alice@example.test", "alice-pw")
    mine = {k: [] for k in ports}
    for i in range(args.messages):
        for k in ("a", "b") if i % 2 else ("b", "a"):
            t0 = time.perf_counter()
            sessions[k].sendmail("alice@example.test", ["sink@example.test"], message)
            mine[k].append(time.perf_counter() - t0)
    for s in sessions.values():
        s.quit()
    a50, b50 = (statistics.median(mine[k]) * 1000 for k in ("a", "b"))
    print(json.dumps({"label": args.label, "messages": args.messages, "p50_ms": round(a50, 3),
                      "versus_p50_ms": round(b50, 3), "ratio": round(a50 / b50, 3)}))


if args.versus_port:
    versus()
    raise SystemExit(0)

threads = [threading.Thread(target=worker) for _ in range(args.sessions)]
t0 = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.perf_counter() - t0
latencies.sort()
p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan")
print(json.dumps({
    "label": args.label,
    "messages": len(latencies),
    "errors": len(errors),
    "seconds": round(elapsed, 3),
    "msgs_per_s": round(len(latencies) / elapsed, 1),
    "p50_ms": round(statistics.median(latencies) * 1000, 3) if latencies else None,
    "p99_ms": round(p99 * 1000, 3),
}))
