"""IMAP load generator for bench_imap.sh. Prints one JSON line per run.

    bench_imap.py seed  --port P --mailbox M --count N --size BYTES
    bench_imap.py fetch --port P --mailbox M --sessions S --label L
    bench_imap.py mixed --port P --mailbox M --sessions S --commands C --label L
    bench_imap.py versus --port P --versus-port Q --mailbox M --commands C --label L
        (the mixed workload on one session to each of two relays, alternating
        command by command, so that the machine's noise falls on both alike)
    bench_imap.py idle  --port P --sessions N --label L   (holds the sessions
        until stdin closes; prints a JSON line once all of them are idling)

Every connection is implicit TLS to --host (default 127.0.0.1), verified
against $CA, logged in as $BENCH_USER / $BENCH_PASSWORD."""

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import socket
import ssl
import statistics
import sys
import time

CA = os.environ["CA"]
USER = os.environ.get("BENCH_USER", "bob@example.test")
PASSWORD = os.environ.get("BENCH_PASSWORD", "bob-pw")
LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


def context():
    return ssl.create_default_context(cafile=CA)


class Conn:
    """A minimal blocking IMAP client: tagged commands, literals skipped
    (counted) in responses."""

    def __init__(self, host, port):
        raw = socket.create_connection((host, port), timeout=120)
        self.sock = context().wrap_socket(raw, server_hostname=host)
        self.buf = bytearray()
        self.n = 0
        self.literal_bytes = 0
        self.line()  # greeting

    def fill(self):
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk

    def line(self):
        while True:
            at = self.buf.find(b"\r\n")
            if at >= 0:
                out = bytes(self.buf[:at + 2])
                del self.buf[:at + 2]
                return out
            self.fill()

    def skip(self, size):
        while len(self.buf) < size:
            # Count what is there and drop it, so memory stays flat.
            size -= len(self.buf)
            self.literal_bytes += len(self.buf)
            self.buf.clear()
            self.fill()
        self.literal_bytes += size
        del self.buf[:size]

    def cmd(self, text, literal=None):
        self.n += 1
        tag = b"b%d" % self.n
        if literal is None:
            self.sock.sendall(tag + b" " + text + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        lines = []
        while True:
            line = self.line()
            m = LITERAL.search(line)
            if m:
                self.skip(int(m.group(1)))
            lines.append(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:40]!r}: {line!r}")
                return lines

    def login(self):
        self.cmd(b'LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode()))
        return self


def message(i, size):
    head = (f"From: Bench <bob@example.test>\r\nTo: bob@example.test\r\n"
            f"Subject: bench {i}\r\nDate: Tue, 24 Nov 2026 08:00:00 +0000\r\n"
            f"Message-ID: <bench.{i}@example.test>\r\n\r\n").encode()
    line = b"".join(b"%07d bench body text to fill the message up to size ..........\r\n" % n
                    for n in range(max(1, (size - len(head)) // 72 + 1)))
    return head + line[:max(0, size - len(head))]


def seed(a):
    c = Conn(a.host, a.port).login()
    try:
        c.cmd(b"CREATE " + a.mailbox.encode())
    except RuntimeError:
        pass
    for i in range(a.count):
        c.cmd(b"APPEND " + a.mailbox.encode(), message(i, a.size))
    c.cmd(b"LOGOUT")
    print(json.dumps({"label": "seed", "mailbox": a.mailbox, "count": a.count, "size": a.size}))


def fetch_one(args):
    host, port, mailbox = args
    c = Conn(host, port).login()
    c.cmd(b"EXAMINE " + mailbox.encode())
    start = time.perf_counter()
    c.cmd(b"UID FETCH 1:* BODY.PEEK[]")
    elapsed = time.perf_counter() - start
    c.cmd(b"LOGOUT")
    return c.literal_bytes, elapsed


def fetch(a):
    start = time.perf_counter()
    with multiprocessing.Pool(a.sessions) as pool:
        results = pool.map(fetch_one, [(a.host, a.port, a.mailbox)] * a.sessions)
    wall = time.perf_counter() - start
    total = sum(r[0] for r in results)
    slowest = max(r[1] for r in results)
    print(json.dumps({"label": a.label, "test": "fetch", "sessions": a.sessions,
                      "bytes": total, "seconds": round(slowest, 3),
                      "MB_per_s": round(total / slowest / 1e6, 1), "wall_s": round(wall, 2)}))


# One round of the mixed workload: what clients do, one command at a time.
MIXED_SCRIPT = [
    lambda u: b"UID FETCH " + u + b" (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)",
    lambda u: b"UID STORE " + u + b" +FLAGS (\\Flagged)",
    lambda u: b"UID FETCH " + u + b" BODY.PEEK[HEADER]",
    lambda u: b"UID STORE " + u + b" -FLAGS (\\Flagged)",
    lambda u: b"STATUS INBOX (MESSAGES UNSEEN)",
    lambda u: b"UID SEARCH UNFLAGGED SINCE 1-Jan-2020",
    lambda u: b"NOOP",
    lambda u: b'LIST "" "*"',
    lambda u: b"UID FETCH " + u + b" BODY.PEEK[]",
]


def mixed_one(args):
    host, port, mailbox, commands, seed_value = args
    rnd = random.Random(seed_value)
    c = Conn(host, port).login()
    c.cmd(b"SELECT " + mailbox.encode())
    lines = c.cmd(b"UID SEARCH ALL")
    uids = lines[0].split()[2:]
    done = 0
    start = time.perf_counter()
    while done < commands:
        for step in MIXED_SCRIPT:
            c.cmd(step(rnd.choice(uids)))
            done += 1
    elapsed = time.perf_counter() - start
    c.cmd(b"LOGOUT")
    return done, elapsed


MIXED_NAMES = ["fetch-envelope", "store+", "fetch-header", "store-", "status", "search",
               "noop", "list", "fetch-body"]


def versus(a):
    conns = {}
    for k, port in (("a", a.port), ("b", a.versus_port)):
        conns[k] = Conn(a.host, port).login()
        conns[k].cmd(b"SELECT " + a.mailbox.encode())
    uids = conns["a"].cmd(b"UID SEARCH ALL")[0].split()[2:]
    rnd = random.Random(0)
    spent = {(k, n): [] for k in conns for n in MIXED_NAMES}
    done = 0
    loop = 0
    while done < a.commands:
        for i, (name, step) in enumerate(zip(MIXED_NAMES, MIXED_SCRIPT)):
            command = step(rnd.choice(uids))
            # Each command type goes first on one relay, then on the other.
            # (Both sessions use one mailbox, so each also sees the other's
            # flag changes; that falls on both alike.)
            for k in ("a", "b") if (loop + i) % 2 else ("b", "a"):
                start = time.perf_counter()
                conns[k].cmd(command)
                spent[(k, name)].append(time.perf_counter() - start)
            done += 1
        loop += 1
    for c in conns.values():
        c.cmd(b"LOGOUT")
    total = {k: sum(sum(spent[(k, n)]) for n in MIXED_NAMES) for k in conns}
    print(json.dumps({"label": a.label, "test": "versus", "commands": done,
                      "seconds": round(total["a"], 3), "versus_seconds": round(total["b"], 3),
                      "ratio": round(total["b"] / total["a"], 3),
                      "median_us": {n: [round(statistics.median(spent[(k, n)]) * 1e6, 1) for k in ("a", "b")]
                                    for n in MIXED_NAMES}}))


def mixed(a):
    with multiprocessing.Pool(a.sessions) as pool:
        results = pool.map(mixed_one, [(a.host, a.port, a.mailbox, a.commands, i)
                                       for i in range(a.sessions)])
    total = sum(r[0] for r in results)
    slowest = max(r[1] for r in results)
    print(json.dumps({"label": a.label, "test": "mixed", "sessions": a.sessions,
                      "commands": total, "seconds": round(slowest, 3),
                      "commands_per_s": round(total / slowest, 1)}))


async def idle_session(host, port, ctx, gate, ready):
    async with gate:
        r, w = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
        await r.readline()
        w.write(b'a LOGIN "%s" "%s"\r\nb SELECT INBOX\r\nc IDLE\r\n' % (USER.encode(), PASSWORD.encode()))
        await w.drain()
        while True:
            line = await asyncio.wait_for(r.readline(), 60)
            if not line:
                raise ConnectionError("closed before IDLE")
            if line.startswith((b"a NO", b"a BAD", b"b NO", b"b BAD", b"c NO", b"c BAD")):
                raise RuntimeError(line)
            if line.startswith(b"+"):
                break
    ready.append((r, w))


async def idle(a):
    ctx = context()
    gate = asyncio.Semaphore(50)
    ready = []
    start = time.perf_counter()
    results = await asyncio.gather(*(idle_session(a.host, a.port, ctx, gate, ready)
                                     for _ in range(a.sessions)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    print(json.dumps({"label": a.label, "test": "idle", "sessions": len(ready),
                      "errors": len(errors), "first_error": repr(errors[0]) if errors else None,
                      "setup_s": round(time.perf_counter() - start, 1)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, w in ready:
        w.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["seed", "fetch", "mixed", "versus", "idle"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mailbox", default="INBOX")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--commands", type=int, default=900)
    p.add_argument("--label", default="")
    p.add_argument("--versus-port", type=int)
    a = p.parse_args()
    if a.mode == "idle":
        asyncio.run(idle(a))
    else:
        {"seed": seed, "fetch": fetch, "mixed": mixed, "versus": versus}[a.mode](a)


if __name__ == "__main__":
    main()
