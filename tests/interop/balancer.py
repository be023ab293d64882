"""Two relays behind a real HAProxy (TCP mode, send-proxy-v2).

    python3 balancer.py HAPROXY_SMTP HAPROXY_IMAP RELAY1_SMTP RELAY2_SMTP PER_PREFIX

HAProxy balances round robin over the two relays, which take PROXY v2
headers from 127.0.0.1 only and allow PER_PREFIX open connections per
client address each. Expects:
- two messages sent with smtplib from 127.0.0.77 through HAProxy (one per
  relay) are accepted by Postfix, and imaplib through HAProxy reads both
  back from Dovecot;
- per-address limits follow the client's address, not HAProxy's: from
  127.0.0.77, 2 x PER_PREFIX connections are served (each relay counts its
  own) and the next is told "Too many open connections from your
  network", while one from 127.0.0.78 is served at the same time;
- connections that skip HAProxy are closed without a session: from
  127.0.0.77 (not a balancer) and from 127.0.0.1 without a header.
Exits non-zero with a reason on the first surprise."""

import imaplib
import os
import smtplib
import socket
import ssl
import sys
import time

CA = os.environ["CA"]
LB_SMTP, LB_IMAP, R1, R2, PER_PREFIX = (int(a) for a in sys.argv[1:6])
ctx = ssl.create_default_context(cafile=CA)


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


class Imap(imaplib.IMAP4_SSL):
    """imaplib from 127.0.0.77 (it has no source address of its own)."""

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, ("127.0.0.77", 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


# 1. Send and read through the balancer.
stamp = str(int(time.time() * 1000))
subjects = [f"interop-haproxy-{stamp}-{i}" for i in range(2)]
for subject in subjects:
    with smtplib.SMTP_SSL("localhost", LB_SMTP, context=ctx, source_address=("127.0.0.77", 0)) as s:
        s.login("alice@example.test", "alice-pw")
        msg = f"From: alice@example.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\nthrough HAProxy\r\n"
        refused = s.sendmail("alice@example.test", ["alice@example.test"], msg)
        if refused:
            fail(f"refused recipients: {refused}")
found = set()
for _ in range(50):
    c = Imap("localhost", LB_IMAP, ssl_context=ctx)
    c.login("alice@example.test", "alice-pw")
    c.select("INBOX", readonly=True)
    for subject in subjects:
        typ, data = c.search(None, "SUBJECT", subject)
        if typ == "OK" and data[0].split():
            found.add(subject)
    c.logout()
    if len(found) == len(subjects):
        break
    time.sleep(0.2)
if len(found) != len(subjects):
    fail(f"read back through HAProxy: {sorted(found)} of {subjects}")


# 2. Per-address limits: the client's address, each relay its own count.
def greeting(port, source):
    """The first reply line over implicit TLS, the socket kept open."""
    sock = socket.create_connection(("127.0.0.1", port), 10, (source, 0))
    try:
        tls = ctx.wrap_socket(sock, server_hostname="localhost")
        line = tls.recv(512)
    except (ssl.SSLError, OSError):
        return None, sock
    return line.decode(errors="replace"), tls


held = []
served = 0
for _ in range(2 * PER_PREFIX):
    line, sock = greeting(LB_SMTP, "127.0.0.77")
    held.append(sock)
    if line and line.startswith("220 "):
        served += 1
if served != 2 * PER_PREFIX:
    fail(f"from 127.0.0.77: {served} of {2 * PER_PREFIX} served")
line, sock = greeting(LB_SMTP, "127.0.0.77")
held.append(sock)
if not line or "Too many open connections from your network" not in line:
    fail(f"from 127.0.0.77, one past the limit: {line!r}")
line, sock = greeting(LB_SMTP, "127.0.0.78")
held.append(sock)
if not line or not line.startswith("220 "):
    fail(f"from 127.0.0.78 while 127.0.0.77 is at its limit: {line!r}")
for sock in held:
    sock.close()


# 3. Skipping the balancer: closed before any session.
for port in (R1, R2):
    for source in ("127.0.0.77", "127.0.0.1"):
        line, sock = greeting(port, source)
        sock.close()
        if line:
            fail(f"straight to the relay on {port} from {source}: {line!r}")
print("ok")
