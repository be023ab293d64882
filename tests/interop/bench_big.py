"""Sends one large message (default 25 MB) through one path and prints the
time taken as JSON. bench.sh reads mailveil's peak RSS around it."""

import argparse
import json
import os
import smtplib
import ssl
import time

ap = argparse.ArgumentParser()
ap.add_argument("--host", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--mb", type=int, default=25)
ap.add_argument("--label", required=True)
args = ap.parse_args()

ctx = ssl.create_default_context(cafile=os.environ["CA"])
line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
size = args.mb * 1000 * 1000
body = line * (size // len(line))
message = (b"From: Alice <alice@example.test>\r\nTo: sink@example.test\r\nSubject: big\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + body)
s = smtplib.SMTP_SSL(args.host, args.port, context=ctx, timeout=600)
s.login("alice@example.test", "alice-pw")
t0 = time.perf_counter()
s.sendmail("alice@example.test", ["sink@example.test"], message)
elapsed = time.perf_counter() - t0
s.quit()
print(json.dumps({"label": args.label, "bytes": len(message), "seconds": round(elapsed, 3)}))
