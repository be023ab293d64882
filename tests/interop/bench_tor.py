"""Start-up figures for mailveil with Tor egress (used by bench_tor.sh):

    python3 bench_tor.py startup --mailveil BIN --config FILE --port P --pidfile F

Starts mailveil, times how long until it logs that Tor is ready, and how long
until a first message is accepted through it (trying every 0.2 s: before Tor
is ready the relay answers 454, which is the point). Leaves mailveil running
(its PID in the pidfile) and prints one JSON line. Bounded: gives up after
180 s."""

import argparse
import json
import os
import smtplib
import ssl
import subprocess
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["startup"])
ap.add_argument("--mailveil", required=True)
ap.add_argument("--config", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--pidfile", required=True)
ap.add_argument("--log", required=True)
args = ap.parse_args()

ctx = ssl.create_default_context(cafile=os.environ["CA"])
message = (b"From: alice@example.test\r\nTo: sink@example.test\r\nSubject: first\r\n\r\n"
           b"first message over Tor\r\n")
LIMIT = 180.0

t0 = time.perf_counter()
proc = subprocess.Popen([args.mailveil, "run", "--config", args.config],
                        stdout=subprocess.DEVNULL, stderr=open(args.log, "w"))
with open(args.pidfile, "w") as f:
    f.write(f"{proc.pid}\n")
bootstrap = {}


def watch():
    while time.perf_counter() - t0 < LIMIT:
        with open(args.log) as f:
            if "Tor: bootstrapped, ready" in f.read():
                bootstrap["s"] = time.perf_counter() - t0
                return
        time.sleep(0.02)


threading.Thread(target=watch, daemon=True).start()
attempts = 0
first = None
while time.perf_counter() - t0 < LIMIT:
    attempts += 1
    try:
        s = smtplib.SMTP_SSL("127.0.0.1", args.port, context=ctx, timeout=30)
        s.login("alice@example.test", "alice-pw")
        s.sendmail("alice@example.test", ["sink@example.test"], message)
        s.quit()
        first = time.perf_counter() - t0
        break
    except (OSError, smtplib.SMTPException):
        time.sleep(0.2)
print(json.dumps({
    "test": "startup",
    "bootstrap_s": round(bootstrap["s"], 2) if "s" in bootstrap else None,
    "first_message_s": round(first, 2) if first is not None else None,
    "attempts": attempts,
}), flush=True)
