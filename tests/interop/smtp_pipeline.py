"""A pipelining SMTP submission client (RFC 2920, and RFC 3030's BDAT) for
run.sh and bench_tor.sh; Python's smtplib waits for every reply.

    smtp_pipeline.py transcript --port P --mode bdat|data|lockstep --rcpt A [--rcpt B ...]
        sends one message; prints every reply the relay gave, one per line,
        in the order the commands were sent.
    smtp_pipeline.py latency --port P --mode lockstep|data|bdat --messages N --label L
        sends N messages of --size body bytes (4096, as bench_smtp.py) to
        sink@ in one session; prints one JSON line with the per-message
        latency (MAIL to the final reply).

Modes: "lockstep" waits for each reply (MAIL, RCPT, then BDAT LAST);
"data" sends MAIL, the RCPTs and DATA in one write, then the message after
354; "bdat" sends MAIL, the RCPTs and BDAT LAST with the message in one
write. Logs in as alice@example.test (or --login) over implicit TLS,
verifying the relay against $CA. Bounded: N messages, 60 s per reply."""

import argparse
import base64
import json
import os
import socket
import ssl
import statistics
import time

ap = argparse.ArgumentParser()
ap.add_argument("what", choices=["transcript", "latency"])
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--mode", choices=["lockstep", "data", "bdat"], required=True)
ap.add_argument("--login", default="alice@example.test")
ap.add_argument("--password", default="alice-pw")
ap.add_argument("--sender", default="alice@example.test")
ap.add_argument("--rcpt", action="append")
ap.add_argument("--subject", default="pipelined")
ap.add_argument("--messages", type=int, default=20)
ap.add_argument("--label", default="")
ap.add_argument("--size", type=int, default=4096, help="body bytes per message (latency)")
args = ap.parse_args()


class Session:
    def __init__(self):
        ctx = ssl.create_default_context(cafile=os.environ["CA"])
        raw = socket.create_connection((args.host, args.port), timeout=60)
        # As mail clients do: a message is not held back for an ACK (Nagle).
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname=args.host)
        self.file = self.sock.makefile("rb")
        self.expect("220")
        self.send(b"EHLO pipeline-client.invalid\r\n")
        ehlo = self.expect("250")
        for needed in ("PIPELINING", "CHUNKING"):
            if needed not in ehlo:
                raise SystemExit(f"the relay does not offer {needed}: {ehlo!r}")
        token = base64.b64encode(f"\0{args.login}\0{args.password}".encode()).decode()
        self.sock.sendall(f"AUTH PLAIN {token}\r\n".encode())
        self.expect("235")

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("the relay closed the connection")
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def expect(self, code):
        reply = self.reply()
        if not reply.startswith(code):
            raise SystemExit(f"expected {code}, got {reply!r}")
        return reply

    def message(self, rcpts, body):
        """Sends one message in args.mode; returns every reply in order."""
        envelope = [f"MAIL FROM:<{args.sender}>\r\n".encode()]
        envelope += [f"RCPT TO:<{r}>\r\n".encode() for r in rcpts]
        bdat = f"BDAT {len(body)} LAST\r\n".encode() + body
        if args.mode == "lockstep":
            replies = []
            for command in envelope:
                self.send(command)
                replies.append(self.reply())
            self.send(bdat)
            replies.append(self.reply())
            return replies
        if args.mode == "bdat":
            self.send(b"".join(envelope) + bdat)
            return [self.reply() for _ in range(len(envelope) + 1)]
        self.send(b"".join(envelope) + b"DATA\r\n")
        replies = [self.reply() for _ in range(len(envelope) + 1)]
        if replies[-1].startswith("354"):
            stuffed = b"".join(b"." + l if l.startswith(b".") else l
                               for l in body.splitlines(keepends=True))
            self.send(stuffed + b".\r\n")
            replies.append(self.reply())
        return replies

    def quit(self):
        self.send(b"QUIT\r\n")
        self.reply()
        self.sock.close()


def body(subject, size=1024):
    line = b"x" * 74 + b"\r\n"
    return (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
            + f"Subject: {subject}\r\n".encode()
            + b"Date: Mon, 23 Nov 2026 15:00:00 -0800\r\nUser-Agent: pipeline-canary-agent\r\n\r\n"
            + line * max(1, size // len(line)))


session = Session()
if args.what == "transcript":
    for reply in session.message(args.rcpt or ["bob@example.test"], body(args.subject)):
        print(reply.replace("\n", " | "))
    session.quit()
else:
    latencies = []
    errors = 0
    for _ in range(args.messages):
        t0 = time.perf_counter()
        replies = session.message(["sink@example.test"], body("bench", args.size))
        latencies.append(time.perf_counter() - t0)
        if not replies[-1].startswith("250"):
            errors += 1
    session.quit()
    q = statistics.quantiles(latencies, n=10) if len(latencies) > 1 else latencies * 9
    print(json.dumps({
        "test": "pipeline", "label": args.label, "mode": args.mode, "messages": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p90_ms": round(q[8] * 1000, 2), "errors": errors,
    }), flush=True)
