"""IMAP and SMTP on one port, chosen by ALPN, with Python's own clients.

    python3 alpn_clients.py PORT

smtplib offers ALPN "smtp" and sends a message through the relay's one
port; imaplib offers ALPN "imap" on the same port and finds it at Dovecot.
Each checks that the relay chose the protocol it offered. Exits non-zero
with a reason on the first surprise."""

import imaplib
import os
import smtplib
import ssl
import sys
import time

CA = os.environ["CA"]
PORT = int(sys.argv[1])


def context(protocol):
    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols([protocol])
    return ctx


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


subject = f"interop-alpn-{int(time.time() * 1000)}"
with smtplib.SMTP_SSL("localhost", PORT, context=context("smtp"), source_address=("127.0.0.77", 0)) as s:
    chosen = s.sock.selected_alpn_protocol()
    if chosen != "smtp":
        fail(f"SMTP: the relay chose {chosen!r}")
    s.login("alice@example.test", "alice-pw")
    s.sendmail("alice@example.test", ["alice@example.test"],
               f"From: alice@example.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\none port\r\n")
for _ in range(50):
    c = imaplib.IMAP4_SSL("localhost", PORT, ssl_context=context("imap"))
    chosen = c.sock.selected_alpn_protocol()
    if chosen != "imap":
        fail(f"IMAP: the relay chose {chosen!r}")
    c.login("alice@example.test", "alice-pw")
    c.select("INBOX", readonly=True)
    typ, data = c.search(None, "SUBJECT", subject)
    c.logout()
    if typ == "OK" and data[0].split():
        print("ok")
        sys.exit(0)
    time.sleep(0.2)
fail(f"{subject} not found through IMAP on port {PORT}")
