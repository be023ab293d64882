"""Clients of mailveil's own onion service, through a Tor client's SOCKS port.

    python3 onion_clients.py imap SOCKS_PORT ONION FINGERPRINT SUBJECT
    python3 onion_clients.py latency SOCKS_PORT ONION FINGERPRINT N
    python3 onion_clients.py reach SOCKS_PORT ONION FINGERPRINT SECONDS

The certificate is checked the way README tells onion users to: its SHA-256
fingerprint (printed by the relay at start) must be FINGERPRINT ("AB:CD:..").
- imap: logs in as alice over onion:993 and finds SUBJECT in INBOX (read
  from Dovecot through the relay's Tor egress); also checks the greeting
  says nothing of the relay's public name.
- reach: tries every 2 s, for up to SECONDS, until the relay's IMAP
  greeting arrives over onion:993; exits non-zero if it never does.
- latency: sends N messages in one SMTP session over onion:465, N through
  the suite's relay with direct egress (127.0.0.1:11465) and N directly to
  Postfix (127.0.0.2:10465), alternating, and prints the median and 90th
  percentile of each, and the ratios.
Exits non-zero with a reason on the first surprise."""

import hashlib
import imaplib
import os
import smtplib
import socket
import ssl
import statistics
import struct
import sys
import time

CA = os.environ["CA"]
MODE, SOCKS_PORT, ONION, FINGERPRINT = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def socks_connect(host, port, timeout=120):
    """A TCP stream to host:port through the SOCKS5 proxy; the name goes to
    Tor, unresolved (SOCKS5 ATYP 3)."""
    s = socket.create_connection(("127.0.0.1", SOCKS_PORT), timeout)
    s.sendall(b"\x05\x01\x00")
    if s.recv(2) != b"\x05\x00":
        fail("SOCKS: no-auth refused")
    name = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port))
    reply = s.recv(4)
    if len(reply) < 4 or reply[1] != 0:
        raise OSError(f"SOCKS connect to {host}:{port} failed: {reply!r}")
    rest = {1: 4, 4: 16}.get(reply[3])
    if rest is None:
        rest = s.recv(1)[0]
    s.recv(rest + 2)
    return s


def pinned_context():
    """No CA can vouch for an onion address here: trust the fingerprint."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_pin(tls):
    got = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest().upper()
    want = FINGERPRINT.replace(":", "").upper()
    if got != want:
        fail(f"certificate fingerprint {got} is not the one the relay printed ({want})")


class OnionImap(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        tls = self.ssl_context.wrap_socket(socks_connect(self.host, self.port), server_hostname=None)
        check_pin(tls)
        return tls


class OnionSmtp(smtplib.SMTP_SSL):
    def _get_socket(self, host, port, timeout):
        tls = self.context.wrap_socket(socks_connect(host, port), server_hostname=None)
        check_pin(tls)
        return tls


def with_retries(what, f, seconds=240):
    """The first connection to a fresh descriptor may fail while Tor fetches it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return f()
        except (OSError, imaplib.IMAP4.error, smtplib.SMTPException) as e:
            if time.monotonic() > deadline:
                fail(f"{what}: {e}")
            time.sleep(5)


if MODE == "imap":
    subject = sys.argv[5]

    def read():
        c = OnionImap(ONION, 993, ssl_context=pinned_context())
        greeting = c.welcome.decode(errors="replace")
        if "localhost" in greeting:
            fail(f"the onion greeting names the public relay: {greeting}")
        c.login("alice@example.test", "alice-pw")
        c.select("INBOX", readonly=True)
        typ, data = c.search(None, "SUBJECT", subject)
        c.logout()
        if typ != "OK" or not data[0].split():
            raise OSError(f"{subject} not (yet) in INBOX")
        return True

    with_retries("IMAP over the onion service", read)
    print("ok")
elif MODE == "reach":
    deadline = time.monotonic() + int(sys.argv[5])
    while True:
        try:
            tls = pinned_context().wrap_socket(socks_connect(ONION, 993, timeout=30), server_hostname=None)
            check_pin(tls)
            if tls.recv(64).startswith(b"* OK"):
                tls.close()
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            fail(f"{ONION}:993 not reachable within {sys.argv[5]} s")
        time.sleep(2)
    print("ok")
elif MODE == "latency":
    n = int(sys.argv[5])
    msg = "From: alice@example.test\r\nTo: alice@example.test\r\nSubject: onion-latency\r\n\r\nx\r\n"
    ctx = ssl.create_default_context(cafile=CA)
    onion = with_retries("SMTP over the onion service",
                         lambda: OnionSmtp(ONION, 465, context=pinned_context(), timeout=120))
    onion.login("alice@example.test", "alice-pw")
    direct = smtplib.SMTP_SSL("127.0.0.2", 10465, context=ctx)
    direct.login("alice@example.test", "alice-pw")
    relay = smtplib.SMTP_SSL("localhost", 11465, context=ctx)
    relay.login("alice@example.test", "alice-pw")
    times = {"onion": [], "relay": [], "direct": []}
    for _ in range(n):
        for name, s in (("onion", onion), ("relay", relay), ("direct", direct)):
            t = time.monotonic()
            s.sendmail("alice@example.test", ["alice@example.test"], msg)
            times[name].append((time.monotonic() - t) * 1000)
    onion.quit()
    relay.quit()
    direct.quit()
    names = {"direct": "Postfix directly", "relay": "mailveil, direct egress",
             "onion": "mailveil, onion ingress + Tor egress"}
    for name in ("direct", "relay", "onion"):
        ts = sorted(times[name])
        print(f"{names[name]}: p50 {statistics.median(ts):.1f} ms, p90 {ts[int(0.9 * (len(ts) - 1))]:.1f} ms over {len(ts)} messages")
    p50 = {k: statistics.median(v) for k, v in times.items()}
    print(f"onion / mailveil direct (p50): {p50['onion'] / p50['relay']:.1f}x; "
          f"onion / Postfix directly: {p50['onion'] / p50['direct']:.1f}x")
else:
    fail(f"unknown mode {MODE}")
