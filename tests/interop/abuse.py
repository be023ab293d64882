"""Abuse and load drivers for abuse.sh. Each mode prints one JSON line.

    abuse.py smtp-load  --port P --sessions N
        N concurrent implicit-TLS submission sessions: all connect and log
        in, wait for each other, then each sends one message and quits.
    abuse.py honest     --smtp-port P --imap-port Q --source A
        One honest user from address A: SMTP connect, login, send; IMAP
        connect, login, SELECT. Times each (seconds).
    abuse.py slowloris  --port P --count N --sources S --tls 0|1 --hold SECS
        N connections from S distinct source addresses (127.0.x.y), each
        trickling one byte every 2 s for SECS seconds (plain: an EHLO line;
        implicit TLS: a TLS record header promising 16 KiB, then its bytes).
        Prints how many the relay accepted, refused with a reply, or closed,
        and how many were still open at the end. Runs an `honest` round
        halfway through.
    abuse.py stuffing   --port P --attempts N --source A --connections C --proto smtp|imap
                        [--login L] [--sources S]
        N wrong-password logins (a new login name each time, or always L)
        from address A (or spread over S addresses 127.0.x.y) over up to C
        connections at once, reconnecting when closed. Counts replies by
        kind.
    `honest --owner` logs in as alice@example.test over IMAP too (the
    account a `stuffing --login alice@example.test` attacks).
    abuse.py pin        --port P --sources S --size BYTES --every SECS --hold SECS
        Memory pinning: one account (bob) logs in once from each of S
        addresses, starts a message in each session at once, sends BYTES of
        it as fast as it can, then one byte every SECS seconds until the
        relay closes the session or SECS of --hold have passed. Prints the
        replies by kind, how long the relay let each trickle last, and an
        honest round (alice) once the bursts are in, and one after.
    abuse.py flood6     --port P --count N [--concurrency C]
        N connections to [::1]:P, each from its own IPv6 /64 in one of two
        /48s, opened and closed at once; honest IPv4 and IPv6 rounds once
        100,000 have gone.

Every TLS connection is verified against $CA. Bounded: every loop has a
fixed count or a deadline."""

import argparse
import asyncio
import base64
import collections
import json
import os
import socket
import ssl
import time

CA = os.environ["CA"]
HOST = "127.0.0.1"
# Linux: bind to an address not on any interface (here: in a prefix routed
# to loopback by abuse.sh).
IPV6_FREEBIND = 78


async def open_from(port, source, **kw):
    """A connection to the relay from `source`: IPv4 to 127.0.0.1, or
    IPv6 to ::1 from any address routed to loopback."""
    if ":" not in source:
        return await asyncio.open_connection(HOST, port, local_addr=(source, 0), **kw)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        await asyncio.get_running_loop().sock_connect(sock, ("::1", port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, **kw)


def ctx():
    c = ssl.create_default_context(cafile=CA)
    return c


async def smtp_reply(r, timeout=120):
    """One (possibly multi-line) SMTP reply as (code, last line)."""
    while True:
        line = await asyncio.wait_for(r.readline(), timeout)
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


async def smtp_cmd(r, w, text, timeout=120):
    w.write(text + b"\r\n")
    await w.drain()
    return await smtp_reply(r, timeout)


def plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())


MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: alice@example.test\r\n"
           b"Subject: load\r\n\r\n" + b"x" * 74 + b"\r\n") * 1


async def smtp_session(port, gate, barrier, source=None):
    r, w = await asyncio.open_connection(HOST, port, ssl=ctx(), server_hostname="localhost",
                                         local_addr=(source, 0) if source else None)
    try:
        code, text = await smtp_reply(r)
        assert code == 220, text
        await smtp_cmd(r, w, b"EHLO load.invalid")
        code, text = await smtp_cmd(r, w, b"AUTH PLAIN " + plain("alice@example.test", "alice-pw"))
        assert code == 235, text
        gate.release()
        if barrier is not None:
            await barrier.wait()
        for cmd, want in [(b"MAIL FROM:<alice@example.test>", 250), (b"RCPT TO:<alice@example.test>", 250),
                          (b"DATA", 354)]:
            code, text = await smtp_cmd(r, w, cmd)
            assert code == want, text
        w.write(MESSAGE + b".\r\n")
        await w.drain()
        code, text = await smtp_reply(r)
        assert code == 250, text
        await smtp_cmd(r, w, b"QUIT")
    finally:
        w.close()


async def smtp_load(a):
    # Connect and log in at most 50 at a time (as a client pool would), then
    # hold all N open and send at once.
    gate = asyncio.Semaphore(50)
    barrier = asyncio.Barrier(a.sessions)
    errors = []

    async def one():
        await gate.acquire()
        try:
            await smtp_session(a.port, gate, barrier)
        except BaseException as e:  # counted, reported
            errors.append(repr(e))
            try:
                gate.release()
            except ValueError:
                pass
            await barrier.abort()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(a.sessions)))
    print(json.dumps({"test": "smtp-load", "sessions": a.sessions, "errors": len(errors),
                      "first_error": errors[0] if errors else None,
                      "seconds": round(time.perf_counter() - t0, 2)}), flush=True)


async def honest_smtp(port, source, out):
    t0 = time.perf_counter()
    r, w = await open_from(port, source, ssl=ctx(), server_hostname="localhost")
    try:
        code, text = await smtp_reply(r, 30)
        assert code == 220, text
        await smtp_cmd(r, w, b"EHLO honest.invalid", 30)
        code, text = await smtp_cmd(r, w, b"AUTH PLAIN " + plain("alice@example.test", "alice-pw"), 30)
        assert code == 235, text
        out["smtp_login_s"] = round(time.perf_counter() - t0, 3)
        for cmd, want in [(b"MAIL FROM:<alice@example.test>", 250), (b"RCPT TO:<bob@example.test>", 250),
                          (b"DATA", 354)]:
            code, text = await smtp_cmd(r, w, cmd, 30)
            assert code == want, text
        w.write(b"Subject: honest\r\n\r\nsent while under attack\r\n.\r\n")
        await w.drain()
        code, text = await smtp_reply(r, 60)
        assert code == 250, text
        out["smtp_send_s"] = round(time.perf_counter() - t0, 3)
    finally:
        w.close()


async def honest_imap(port, source, out, user="bob@example.test", password="bob-pw"):
    t1 = time.perf_counter()
    r, w = await open_from(port, source, ssl=ctx(), server_hostname="localhost")
    try:
        greeting = await asyncio.wait_for(r.readline(), 30)
        assert greeting.startswith(b"* OK"), greeting
        w.write(b'a LOGIN "%s" "%s"\r\nb SELECT INBOX\r\nc LOGOUT\r\n' % (user.encode(), password.encode()))
        await w.drain()
        while True:
            line = await asyncio.wait_for(r.readline(), 30)
            if not line:
                raise ConnectionError("closed")
            if line.startswith(b"a ") and not line.startswith(b"a OK"):
                raise AssertionError(line.decode(errors="replace").strip())
            if line.startswith(b"b "):
                assert line.startswith(b"b OK"), line
                out["imap_login_select_s"] = round(time.perf_counter() - t1, 3)
            if line.startswith(b"c "):
                break
    finally:
        w.close()


async def honest_round(smtp_port, imap_port, source, owner=False):
    """SMTP login and send, then IMAP login and SELECT, each timed; errors
    recorded per protocol (the reply text says who refused). With owner,
    both log in as alice."""
    out = {}
    imap = (lambda p, s, o: honest_imap(p, s, o, "alice@example.test", "alice-pw")) if owner else honest_imap
    for name, step, port in [("smtp", honest_smtp, smtp_port), ("imap", imap, imap_port)]:
        try:
            await step(port, source, out)
        except BaseException as e:
            out[f"{name}_error"] = str(e) or repr(e)
    out["ok"] = not any(k.endswith("_error") for k in out)
    return out


async def honest(a):
    res = await honest_round(a.smtp_port, a.imap_port, a.source, a.owner)
    res["test"] = "honest"
    res["label"] = a.label
    print(json.dumps(res), flush=True)


def sources(n):
    """n distinct loopback addresses 127.0.1.1 onwards (skipping .0/.255)."""
    out = []
    i = 0
    while len(out) < n:
        hi, lo = divmod(i, 254)
        out.append(f"127.0.{1 + hi}.{1 + lo}")
        i += 1
    return out


async def trickler(port, tls, source, hold_until, stats):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, port, local_addr=(source, 0)), 10)
    except BaseException:
        stats["connect_failed"] += 1
        return
    stats["connected"] += 1
    if tls:
        payload = b"\x16\x03\x01\x40\x00" + b"\x00" * 16384
    else:
        # A greeting comes first; then an EHLO line, one byte at a time.
        payload = b"EHLO " + b"a" * 5000 + b"\r\n"
    i = 0
    closed_reason = None
    try:
        while time.monotonic() < hold_until and i < len(payload):
            w.write(payload[i:i + 1])
            await w.drain()
            i += 1
            # Read whatever the relay said, without blocking the trickle.
            try:
                data = await asyncio.wait_for(r.read(4096), 2.0)
                if not data:
                    closed_reason = "closed"
                    break
                if data.startswith(b"421") or b"\r\n421" in data or b"BYE" in data:
                    closed_reason = "told"
                    text = data.decode(errors="replace").strip().splitlines()[-1]
                    stats["replies"][text[:80]] += 1
                    break
            except asyncio.TimeoutError:
                pass
    except (ConnectionError, OSError):
        closed_reason = "reset"
    if closed_reason is None:
        stats["still_open"] += 1
    else:
        stats[closed_reason] += 1
    w.close()


async def slowloris(a):
    stats = collections.Counter()
    stats["replies"] = collections.Counter()
    addrs = sources(a.sources)
    hold_until = time.monotonic() + a.hold
    tasks = []
    t0 = time.perf_counter()
    for i in range(a.count):
        tasks.append(asyncio.create_task(trickler(a.port, a.tls, addrs[i % len(addrs)], hold_until, stats)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    # Let them settle in, then an honest user from elsewhere.
    await asyncio.sleep(min(10, a.hold / 3))
    res = await honest_round(a.smtp_port, a.imap_port, a.honest_source)
    await asyncio.gather(*tasks)
    replies = stats.pop("replies")
    print(json.dumps({"test": "slowloris", "label": a.label, "count": a.count, "sources": a.sources,
                      "tls": bool(a.tls), "hold_s": a.hold, **stats,
                      "relay_replies": dict(replies), "honest": res,
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


async def stuffing(a):
    counts = collections.Counter()
    remaining = [a.attempts]
    next_id = [0]
    t0 = time.perf_counter()

    def take():
        if remaining[0] <= 0:
            return None
        remaining[0] -= 1
        next_id[0] += 1
        return next_id[0]

    addrs = sources(a.sources) if a.sources > 1 else [a.source]

    def victim(n):
        return a.login or f"{a.proto}-victim{n}@example.test"

    async def connection(source):
        # One connection: log in with wrong passwords until closed or done.
        reconnects = 0
        while remaining[0] > 0 and reconnects < 10_000:
            reconnects += 1
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(HOST, a.port, ssl=ctx(), server_hostname="localhost",
                                            local_addr=(source, 0)), 30)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                counts["connect_failed"] += 1
                await asyncio.sleep(0.2)
                continue
            try:
                if a.proto == "smtp":
                    code, text = await smtp_reply(r, 30)
                    if code != 220:
                        counts[f"refused at connect: {text[:60]}"] += 1
                        await asyncio.sleep(0.5)
                        continue
                    await smtp_cmd(r, w, b"EHLO stuffer.invalid", 30)
                    while (n := take()) is not None:
                        code, text = await smtp_cmd(
                            r, w, b"AUTH PLAIN " + plain(victim(n), f"guess{n}"), 60)
                        counts[text[:60]] += 1
                        if code == 235:
                            counts["LOGGED IN"] += 1
                else:
                    greeting = await asyncio.wait_for(r.readline(), 30)
                    if not greeting.startswith(b"* OK"):
                        counts[f"refused at connect: {greeting.decode(errors='replace').strip()[:60]}"] += 1
                        await asyncio.sleep(0.5)
                        continue
                    while (n := take()) is not None:
                        w.write(b'a LOGIN "%s" "guess%d"\r\n' % (victim(n).encode(), n))
                        await w.drain()
                        while True:
                            line = await asyncio.wait_for(r.readline(), 60)
                            if not line:
                                raise ConnectionError("closed")
                            if line.startswith(b"a "):
                                break
                        counts[line.decode(errors="replace").strip()[:60]] += 1
            except (ConnectionError, OSError, asyncio.TimeoutError, ssl.SSLError):
                counts["connection lost"] += 1
            finally:
                w.close()

    await asyncio.gather(*(connection(addrs[i % len(addrs)]) for i in range(a.connections)))
    elapsed = time.perf_counter() - t0
    print(json.dumps({"test": "stuffing", "proto": a.proto, "attempts": a.attempts,
                      "one_login": bool(a.login), "sources": len(addrs),
                      "seconds": round(elapsed, 1),
                      "attempts_per_s": round(a.attempts / elapsed, 1),
                      "replies": dict(counts)}), flush=True)


async def pin(a):
    stats = collections.Counter()
    replies = collections.Counter()
    held_for = []
    burst_done = asyncio.Event()
    bursts = [0]
    addrs = sources(a.sources)
    line = b"X-Fill: " + b"y" * 90 + b"\r\n"
    body = line * (a.size // len(line))

    async def one(source):
        r, w = await asyncio.open_connection(HOST, a.port, ssl=ctx(), server_hostname="localhost",
                                             local_addr=(source, 0))
        sent = False
        try:
            code, text = await smtp_reply(r, 30)
            await smtp_cmd(r, w, b"EHLO pin.invalid", 30)
            code, text = await smtp_cmd(r, w, b"AUTH PLAIN " + plain("bob@example.test", "bob-pw"), 60)
            if code != 235:
                replies[f"AUTH: {text[:70]}"] += 1
                return
            code, text = await smtp_cmd(r, w, b"MAIL FROM:<bob@example.test>", 60)
            if code != 250:
                replies[f"MAIL: {text[:70]}"] += 1
                return
            await smtp_cmd(r, w, b"RCPT TO:<bob@example.test>", 60)
            code, text = await smtp_cmd(r, w, b"DATA", 60)
            if code != 354:
                replies[f"DATA: {text[:70]}"] += 1
                return
            w.write(b"Subject: pin\r\n\r\n" + body)
            await w.drain()
            stats["bursts_sent"] += 1
            sent = True
        except (ConnectionError, OSError, asyncio.TimeoutError, ssl.SSLError) as e:
            replies[f"lost: {e!r}"[:80]] += 1
            return
        finally:
            if not sent:
                w.close()
            bursts[0] += 1
            if bursts[0] == len(addrs):
                burst_done.set()
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < a.hold:
                try:
                    data = await asyncio.wait_for(r.read(4096), a.every)
                    if not data:
                        replies["closed without a word"] += 1
                    else:
                        replies[f"trickle: {data.decode(errors='replace').strip()[:70]}"] += 1
                    held_for.append(round(time.monotonic() - t0, 1))
                    return
                except asyncio.TimeoutError:
                    w.write(b"y")
                    await w.drain()
            stats["still_open"] += 1
        except (ConnectionError, OSError) as e:
            replies[f"trickle lost: {e!r}"[:80]] += 1
            held_for.append(round(time.monotonic() - t0, 1))
        finally:
            w.close()

    tasks = [asyncio.create_task(one(s)) for s in addrs]
    await asyncio.wait_for(burst_done.wait(), 300)
    # The relay has the bursts (or has refused them): a mark for the
    # caller's RSS reading, then an honest user.
    print(json.dumps({"test": "pin-mark", "bursts_sent": stats["bursts_sent"]}), flush=True)
    await asyncio.sleep(3)
    during = await honest_round(a.smtp_port, a.imap_port, a.honest_source)
    await asyncio.gather(*tasks)
    after = await honest_round(a.smtp_port, a.imap_port, a.honest_source)
    print(json.dumps({"test": "pin", "sources": a.sources, "size": a.size, "every_s": a.every,
                      **stats, "replies": dict(replies), "trickle_lasted_s": sorted(held_for),
                      "honest_during": during, "honest_after": after}), flush=True)


async def flood6(a):
    """Connections from --count distinct IPv6 /64s over two /48s
    (2001:db8:1::/48 and 2001:db8:2::/48), --concurrency at a time, each
    opened and closed at once; an honest IPv4 and an honest IPv6 user
    (2001:db8:9::/48) log in and send once 100,000 /64s have been used."""
    loop = asyncio.get_running_loop()
    counts = collections.Counter()
    gate = asyncio.Semaphore(a.concurrency)
    honest = {}

    async def one(i):
        n48, k = 1 + i % 2, i // 2
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            sock.setblocking(False)
            sock.bind((f"2001:db8:{n48:x}:{k:x}::1", 0))
            await asyncio.wait_for(loop.sock_connect(sock, ("::1", a.port)), 10)
            counts["connected"] += 1
        except (OSError, asyncio.TimeoutError):
            counts["connect_failed"] += 1
        finally:
            sock.close()
            gate.release()

    async def honest_pair():
        t = time.perf_counter() - t0
        v4, v6 = await asyncio.gather(
            honest_round(a.smtp_port, a.imap_port, a.honest_source),
            honest_round(a.smtp6_port, a.imap6_port, "2001:db8:9::1"))
        honest.update({"at_s": round(t, 1), "v4": v4, "v6": v6})

    assert a.count <= 2 * 65536
    t0 = time.perf_counter()
    tasks = []
    check = None
    for i in range(a.count):
        await gate.acquire()
        tasks.append(asyncio.create_task(one(i)))
        if i == 100_000:
            check = asyncio.create_task(honest_pair())
        if len(tasks) >= 10_000:
            await asyncio.gather(*tasks)
            tasks = []
    await asyncio.gather(*tasks)
    flood_s = time.perf_counter() - t0
    if check is None:
        check = asyncio.create_task(honest_pair())
    await check
    print(json.dumps({"test": "flood6", "distinct_64s": a.count, "distinct_48s": 2, **counts,
                      "flood_s": round(flood_s, 1), "per_s": round(a.count / flood_s),
                      "honest": honest}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["smtp-load", "honest", "slowloris", "stuffing", "pin", "flood6"])
    p.add_argument("--port", type=int)
    p.add_argument("--smtp-port", type=int, default=11465)
    p.add_argument("--imap-port", type=int, default=11993)
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--source", default="127.0.0.10")
    p.add_argument("--honest-source", default="127.0.0.10")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--sources", type=int, default=1)
    p.add_argument("--tls", type=int, default=0)
    p.add_argument("--hold", type=float, default=30)
    p.add_argument("--attempts", type=int, default=10000)
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--proto", choices=["smtp", "imap"], default="smtp")
    p.add_argument("--label", default="")
    p.add_argument("--login", default="", help="stuffing: attack this one login")
    p.add_argument("--owner", action="store_true", help="honest: log in as alice on both protocols")
    p.add_argument("--size", type=int, default=35 << 20, help="pin: bytes sent fast")
    p.add_argument("--every", type=float, default=240, help="pin: seconds between trickled bytes")
    p.add_argument("--smtp6-port", type=int, default=11466)
    p.add_argument("--imap6-port", type=int, default=11994)
    p.add_argument("--concurrency", type=int, default=500)
    a = p.parse_args()
    mode = {"smtp-load": smtp_load, "honest": honest, "slowloris": slowloris, "stuffing": stuffing, "pin": pin, "flood6": flood6}[a.mode]
    asyncio.run(mode(a))


if __name__ == "__main__":
    main()
