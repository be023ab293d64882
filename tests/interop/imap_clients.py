"""Python imaplib through mailveil's IMAP listeners, from 127.0.0.77, against
the interop suite's Dovecot. One scenario per invocation:

    python3 imap_clients.py <scenario>

Scenarios: prelogin, compress, auth, workflow, idle, id, big, sent-copy.
Exits non-zero with a reason on the first unexpected answer."""

import datetime
import email.utils
import imaplib
import os
import re
import socket
import ssl
import sys
import time

W = os.environ["W"]
CA = os.environ["CA"]
SOURCE = ("127.0.0.77", 0)
RELAY_TLS = ("127.0.0.1", 11993)
RELAY_STARTTLS = ("127.0.0.1", 11143)
DIRECT = ("127.0.0.2", 10993)
USER, PASSWORD = "alice@example.test", "alice-pw"
ctx = ssl.create_default_context(cafile=CA)
# Subjects and folders unique to this invocation, so a scenario can be re-run.
RUN = str(int(time.time() * 1000))


class FromClient(imaplib.IMAP4_SSL):
    """Implicit TLS, connecting from the client's own address."""

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=SOURCE)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class FromClientPlain(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=SOURCE)


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def expect(cond, why):
    if not cond:
        fail(why)


def relay():
    return FromClient(*RELAY_TLS, ssl_context=ctx, timeout=30)


def direct():
    return imaplib.IMAP4_SSL(*DIRECT, ssl_context=ctx, timeout=30)


def login(m):
    typ, _ = m.login(USER, PASSWORD)
    expect(typ == "OK", "login refused")
    return m


def capabilities(m):
    typ, data = m.capability()
    expect(typ == "OK", "CAPABILITY failed")
    return data[0].decode().upper().split()


def fresh_date():
    """The Date a client writes as it composes, in a zone other than UTC: a
    message counts as just composed only when its Date is recent."""
    zone = datetime.timezone(datetime.timedelta(hours=1))
    return email.utils.format_datetime(datetime.datetime.now(zone)).encode()


def message(subject, body, extra=b""):
    return (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
            b"Subject: " + subject + b"\r\nDate: " + fresh_date() + b"\r\n"
            b"Message-ID: <" + subject + b"@py-laptop.invalid>\r\n"
            b"User-Agent: py-canary-agent\r\nX-Mailer: py-canary-mailer\r\n" + extra +
            b"\r\n" + body)


def split(msg):
    at = msg.find(b"\r\n\r\n")
    return msg[:at + 2], msg[at + 4:]


def fetch_one(m, uid, part="BODY.PEEK[]"):
    typ, data = m.uid("FETCH", uid, "(" + part + ")")
    expect(typ == "OK" and data and isinstance(data[0], tuple), f"FETCH {uid} failed: {data!r}")
    return data[0][1]


def check_sanitized(stored, sent_body, what):
    head, body = split(stored)
    expect(body == sent_body, f"{what}: body changed ({len(body)} vs {len(sent_body)} bytes)")
    low = head.lower()
    for bad in (b"user-agent", b"x-mailer", b"py-laptop.invalid", b"canary"):
        expect(bad not in low, f"{what}: {bad!r} still in stored headers")


# ------------------------------------------------------------------ scenarios
def prelogin():
    m = FromClientPlain(*RELAY_STARTTLS, timeout=30)
    greeting = m.welcome.decode()
    expect(greeting.startswith("* OK [CAPABILITY "), f"greeting {greeting!r}")
    for leak in ("Dovecot", "127.0.0.2", "mailveil", "10993"):
        expect(leak.lower() not in greeting.lower(), f"greeting reveals {leak}: {greeting!r}")
    caps = capabilities(m)
    expect("LOGINDISABLED" in caps and "STARTTLS" in caps, f"plain-text caps {caps}")
    expect(not any(c.startswith("AUTH=") for c in caps), f"AUTH offered before TLS: {caps}")
    try:
        m.login(USER, PASSWORD)
        fail("LOGIN accepted before STARTTLS")
    except imaplib.IMAP4.error as e:
        expect("PRIVACYREQUIRED" in str(e), f"LOGIN before TLS: {e}")
    typ, _ = m.noop()
    expect(typ == "OK", "NOOP failed")
    m.starttls(ctx)
    caps = capabilities(m)
    expect("AUTH=PLAIN" in caps and "LOGINDISABLED" not in caps and "STARTTLS" not in caps,
           f"caps after STARTTLS {caps}")
    expect(not any(c.startswith("SCRAM-") or "PLUS" in c for c in caps), f"SCRAM offered {caps}")
    login(m)
    m.logout()
    print("STARTTLS listener: LOGINDISABLED before TLS, login after")


def compress():
    d = login(direct())
    upstream = capabilities(d)
    d.logout()
    expect("COMPRESS=DEFLATE" in upstream, f"Dovecot does not offer COMPRESS: {upstream}")
    m = login(relay())
    ours = capabilities(m)
    expect(not any(c.startswith("COMPRESS") for c in ours), f"COMPRESS through relay: {ours}")
    for cap in ("IDLE", "MOVE", "UIDPLUS", "CONDSTORE", "QRESYNC", "SPECIAL-USE", "LITERAL+"):
        expect(cap in ours, f"{cap} lost through relay: {ours}")
    tag = m._new_tag()
    m.send(tag + b" COMPRESS DEFLATE\r\n")
    line = m.readline()
    expect(line.startswith(tag + b" NO") or line.startswith(tag + b" BAD"), f"COMPRESS: {line!r}")
    typ, _ = m.noop()
    expect(typ == "OK", "session unusable after refused COMPRESS")
    m.logout()
    print("COMPRESS offered by Dovecot, hidden and refused by mailveil")


def auth():
    m = relay()
    try:
        m.login(USER, "wrong-password")
        fail("wrong password accepted")
    except imaplib.IMAP4.error as e:
        expect("AUTHENTICATIONFAILED" in str(e), f"wrong password: {e}")
    # The provider's own verdict and code come back; the session goes on.
    typ, _ = m.authenticate("PLAIN", lambda _: b"\0" + USER.encode() + b"\0" + PASSWORD.encode())
    expect(typ == "OK", "AUTHENTICATE PLAIN refused")
    typ, data = m.select("INBOX")
    expect(typ == "OK", f"SELECT after AUTHENTICATE: {data}")
    m.logout()
    # The STARTTLS upstream (upstream 'provider-starttls'), AUTHENTICATE LOGIN.
    m = relay()
    answers = iter([b"alice@starttls.test", PASSWORD.encode()])
    typ, _ = m.authenticate("LOGIN", lambda _: next(answers))
    expect(typ == "OK", "AUTHENTICATE LOGIN via STARTTLS upstream refused")
    m.logout()
    print("wrong password refused with the provider's code; PLAIN and LOGIN pass through")


def workflow():
    m = login(relay())
    archive = "Archive-" + RUN
    prefix = "interop-imap-" + RUN
    m.create(archive)
    typ, _ = m.select("INBOX")
    expect(typ == "OK", "SELECT INBOX")
    sent = {}
    for i in range(3):
        subject = f"{prefix}-{i}".encode()
        body = f"imap body {i}\r\n.dot line\r\nFrom the start\r\n".encode()
        typ, data = m.append("INBOX", r"(\Seen)", None, message(subject, body))
        expect(typ == "OK", f"APPEND {i}: {data}")
        sent[subject] = body
    typ, data = m.uid("SEARCH", None, "SUBJECT", prefix)
    uids = data[0].split()
    expect(typ == "OK" and len(uids) == 3, f"SEARCH found {data}")
    for uid in uids:
        stored = fetch_one(m, uid)
        subject = re.search(rb"^Subject: (\S+)", stored, re.M).group(1)
        check_sanitized(stored, sent[subject], f"message {subject!r}")
    typ, _ = m.uid("STORE", uids[0], "+FLAGS", r"(\Flagged)")
    expect(typ == "OK", "STORE")
    typ, data = m.uid("FETCH", uids[0], "(FLAGS)")
    expect(b"\\Flagged" in data[0], f"flag not stored: {data}")
    typ, data = m.uid("MOVE", uids[1], archive)
    expect(typ == "OK", f"MOVE: {data}")
    typ, data = m.status(archive, "(MESSAGES)")
    expect(typ == "OK" and b"MESSAGES 1" in data[0], f"Archive after MOVE: {data}")
    typ, data = m.uid("SEARCH", None, "SUBJECT", prefix)
    expect(len(data[0].split()) == 2, f"INBOX after MOVE: {data}")
    # CONDSTORE through the relay.
    typ, data = m.uid("FETCH", uids[0], "(MODSEQ)")
    expect(typ == "OK" and b"MODSEQ" in data[0], f"CONDSTORE FETCH: {data}")
    m.logout()
    print("APPEND sanitized, SEARCH, FETCH byte-exact, STORE, MOVE, CONDSTORE")


def idle():
    m = login(relay())
    m.select("INBOX")
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    line = m.readline()
    expect(line.startswith(b"+"), f"IDLE: {line!r}")
    d = login(direct())
    d.append("INBOX", None, None, message(b"interop-idle", b"idle body\r\n"))
    d.logout()
    m.sock.settimeout(15)
    seen = b""
    while b"EXISTS" not in seen:
        seen = m.readline()
        expect(seen, "connection closed while idling")
    m.send(b"DONE\r\n")
    while True:
        line = m.readline()
        expect(line, "connection closed after DONE")
        if line.startswith(tag):
            break
    expect(line.startswith(tag + b" OK"), f"IDLE completion {line!r}")
    typ, _ = m.noop()
    expect(typ == "OK", "NOOP after IDLE")
    m.logout()
    print("IDLE: new mail announced through the relay, DONE completes")


def ident():
    m = login(relay())
    typ, data = m.xatom("ID", '("name" "canary-idclient" "version" "9.9" "os" "canary-os")')
    expect(typ == "OK", f"ID: {data}")
    m.logout()
    print("ID answered; the provider's log is checked by run.sh")


def big():
    m = login(relay())
    m.select("INBOX")
    body = b"".join(b"%07d big line with some text to fill it up.................\r\n" % i
                    for i in range(130000))
    typ, data = m.append("INBOX", None, None, message(b"interop-big-" + RUN.encode(), body))
    expect(typ == "OK", f"APPEND big: {data}")
    typ, data = m.uid("SEARCH", None, "SUBJECT", "interop-big-" + RUN)
    uid = data[0].split()[-1]
    check_sanitized(fetch_one(m, uid), body, f"{len(body)} byte message")
    m.logout()
    print(f"a {len(body) // 1000000} MB message appended and fetched intact")


def sent_copy():
    """The Sent copy neomutt saved through the relay, read from Dovecot's
    Maildir on disk: there once, identifying headers gone, body intact."""
    sent = os.path.join(W, "mail", "alice", "Maildir", ".Sent")
    copies = []
    for sub in ("new", "cur"):
        folder = os.path.join(sent, sub)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            data = open(os.path.join(sent, sub, name), "rb").read()
            if b"Subject: interop-fcc-neomutt" in data:
                copies.append(data)
    expect(len(copies) == 1, f"{len(copies)} Sent copies")
    head, body = split(copies[0])
    expect(body == open(os.path.join(W, "msgs", "neomutt-fcc.txt"), "rb").read().replace(b"\n", b"\r\n"),
           f"Sent copy body changed: {body!r}")
    for bad in (b"user-agent", b"neomutt-laptop.invalid", b"127.0.0.77"):
        expect(bad not in head.lower(), f"Sent copy still carries {bad!r}")
    date = re.search(rb"^Date: .* \d\d:\d\d:(\d\d) \+0000\r$", head, re.M)
    expect(date is not None and date.group(1) == b"00", f"Sent copy's Date not UTC to the minute: {head!r}")
    # neomutt sends its local time, seconds included, as the APPEND
    # date-time; the relay sends the UTC minute, so Dovecot records :00.
    d = direct()
    d.login("alice", PASSWORD)
    d.select("Sent", readonly=True)
    typ, found = d.search(None, "SUBJECT", "interop-fcc-neomutt")
    expect(typ == "OK" and len(found[0].split()) == 1, f"Sent copy at Dovecot: {typ} {found}")
    typ, data = d.fetch(found[0].split()[0], "(INTERNALDATE)")
    d.logout()
    internal = re.search(rb'INTERNALDATE "[^"]* \d\d:\d\d:(\d\d) [+-]\d{4}"', data[0])
    expect(internal is not None and internal.group(1) == b"00", f"INTERNALDATE not to the minute: {data!r}")
    print("neomutt's Sent copy stored once, without identifying headers, Date and INTERNALDATE to the minute")


SCENARIOS = {"prelogin": prelogin, "compress": compress, "auth": auth, "workflow": workflow,
             "idle": idle, "id": ident, "big": big, "sent-copy": sent_copy}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        fail("usage: imap_clients.py " + "|".join(SCENARIOS))
    SCENARIOS[sys.argv[1]]()
