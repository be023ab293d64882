"""Clients for the egress runs (SOCKS5 and Tor), from 127.0.0.77:

    python3 egress_clients.py imap <port> <login> <subject>
        logs in through mailveil, finds the message with <subject> in INBOX
        and fetches it whole; fails unless it is there.
    python3 egress_clients.py imap-unavailable <port> <login>
        expects LOGIN to be answered NO [UNAVAILABLE] (a temporary error).
    python3 egress_clients.py smtp-unavailable <port> <login>
        expects AUTH to be answered 454 (a temporary error).
    python3 egress_clients.py count <port> <file>
        listens on 127.0.0.1:<port> and writes the number of connections it
        accepted to <file> after each one (stands in for a provider that must
        never be reached directly).
"""

import imaplib
import os
import smtplib
import socket
import ssl
import sys
import time

CA = os.environ["CA"]
SOURCE = ("127.0.0.77", 0)
PASSWORD = "alice-pw"
ctx = ssl.create_default_context(cafile=CA)


class FromClient(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=SOURCE)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def imap(port, login, subject):
    # NO [UNAVAILABLE] is a temporary error, and a real client retries. On a
    # loaded machine the first circuit to an onion service can take longer
    # than the relay's upstream timeout, and on the private network the
    # service's descriptor can be late (tornet.sh waits 90 s for its first
    # upload, and has seen it take longer) or be looked up across an
    # 8-minute time-period boundary. Seen on 2026-12-01: five attempts 10 s
    # apart all failed. So it retries, 10 s apart, for up to 4 minutes.
    deadline = time.time() + 240
    attempt = 0
    while True:
        attempt += 1
        m = FromClient("127.0.0.1", int(port), ssl_context=ctx, timeout=60)
        try:
            m.login(login, PASSWORD)
            break
        except imaplib.IMAP4.error as e:
            if b"UNAVAILABLE" not in str(e).encode() or time.time() > deadline:
                raise
            print(f"attempt {attempt}: {e}; retrying", file=sys.stderr)
            m.shutdown()
            time.sleep(10)
    typ, _ = m.select("INBOX")
    if typ != "OK":
        fail("SELECT failed")
    # Delivery (Postfix, then LMTP to Dovecot) takes a moment.
    for _ in range(30):
        typ, data = m.uid("SEARCH", None, "SUBJECT", f'"{subject}"')
        uids = data[0].split()
        if typ == "OK" and uids:
            break
        time.sleep(1)
        m.noop()
    else:
        fail(f"no message with subject {subject}")
    typ, data = m.uid("FETCH", uids[-1], "(BODY.PEEK[])")
    if typ != "OK" or subject.encode() not in data[0][1]:
        fail("FETCH did not return the message")
    m.logout()


def imap_unavailable(port, login):
    m = FromClient("127.0.0.1", int(port), ssl_context=ctx, timeout=60)
    try:
        m.login(login, PASSWORD)
    except imaplib.IMAP4.error as e:
        if "[UNAVAILABLE]" in str(e):
            return
        fail(f"unexpected refusal: {e}")
    fail("login succeeded while the egress is down")


def smtp_unavailable(port, login):
    s = smtplib.SMTP_SSL("127.0.0.1", int(port), context=ctx, timeout=60,
                         source_address=SOURCE)
    s.ehlo("egress-client.invalid")
    try:
        s.login(login, PASSWORD)
    except smtplib.SMTPAuthenticationError as e:
        if e.smtp_code == 454:
            return
        fail(f"unexpected reply {e.smtp_code}")
    fail("AUTH succeeded while the egress is down")


def count(port, path):
    srv = socket.create_server(("127.0.0.1", int(port)))
    n = 0
    with open(path, "w") as f:
        f.write("0\n")
    while True:
        c, _ = srv.accept()
        c.close()
        n += 1
        with open(path, "w") as f:
            f.write(f"{n}\n")


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"imap": imap, "imap-unavailable": imap_unavailable,
     "smtp-unavailable": smtp_unavailable, "count": count}[mode](*args)
