"""Helpers for memory.sh: canary sessions through mailveil, a session held
open as the positive control, and the count of canaries in a core file.

    memory.py sessions CANARIES.json   run the SMTP and IMAP canary sessions to
                                       the end, wait for the provider to store
                                       both messages, write every needle
    memory.py control CANARIES.json    open an SMTP session and stop in the
                                       middle of DATA; print "ready", hold the
                                       session until stdin closes
    memory.py count CORE CANARIES.json TSV
                                       print a table of counts; write one
                                       "role<TAB>count<TAB>name" line per
                                       needle to TSV

Every needle carries the random part of one run ($R, from memory.sh), except
the logins and the right password, which are the suite's accounts. The
canary sessions log in as alice (and fail once with a wrong password for
each protocol); the control session logs in as bob and sends to bob, so
that nothing of alice's is held by a session still open. Each kind of
session data must be gone once its session ended: passwords (right and
wrong), logins, envelope addresses, mailbox names, search terms, message
content, and what mailveil made from them."""

import base64
import email
import email.policy
import email.utils
import imaplib
import json
import mmap
import os
import smtplib
import ssl
import sys
import time

CA = os.environ["CA"]
W = os.environ["W"]
R = os.environ["R"]
HOST = "127.0.0.1"
SMTP_PORT = int(os.environ.get("SMTP_PORT", "11465"))
IMAP_PORT = int(os.environ.get("IMAP_PORT", "11993"))
ALICE, ALICE_PW = "alice@example.test", "alice-pw"
BOB, BOB_PW = "bob@example.test", "bob-pw"
MAILDIR = os.path.join(W, "mail", "alice", "Maildir")


def context():
    return ssl.create_default_context(cafile=CA)


def smtp_message():
    # The line ".BODYCANARY-R" goes out dot-stuffed ("..BODYCANARY-R", by
    # smtplib); only mailveil's unstuffing makes "\n.BODYCANARY-R".
    return (f"From: {ALICE}\r\n"
            f"To: {ALICE}\r\n"
            f"Subject: SMTPSUBJCANARY-{R}\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n"
            f"Message-ID: <canary-{R}@laptop-canary.invalid>\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n"
            f"\r\n"
            f"first body line\r\n"
            f".BODYCANARY-{R}\r\n"
            f"last body line\r\n").encode()


def draft_message():
    # Just composed (a fresh Date), so the relay cleans it.
    return (f"From: {ALICE}\r\n"
            f"To: {BOB}\r\n"
            f"Subject: DRAFTSUBJCANARY-{R}\r\n"
            f"Date: {email.utils.formatdate()}\r\n"
            f"Message-ID: <canary-draft-{R}@laptop-canary.invalid>\r\n"
            f"\r\n"
            f"draft body line\r\n").encode()


def stored(folders, subject, timeout=60):
    """The provider's stored copy with this Subject (Maildir file), waiting
    for Postfix's delivery through LMTP."""
    deadline = time.time() + timeout
    needle = f"Subject: {subject}".encode()
    while True:
        for folder in folders:
            for sub in ("new", "cur"):
                d = os.path.join(folder, sub)
                for name in os.listdir(d) if os.path.isdir(d) else []:
                    with open(os.path.join(d, name), "rb") as f:
                        data = f.read()
                    if needle in data:
                        return data
        if time.time() > deadline:
            raise SystemExit(f"no stored message with {needle!r} in {folders}")
        time.sleep(0.2)


def rewritten_id(data, original):
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    ids = msg.get_all("Message-ID") or []
    if len(ids) != 1:
        raise SystemExit(f"expected one Message-ID in the stored copy, found {ids!r}")
    value = ids[0].strip()
    if original in value:
        raise SystemExit(f"Message-ID was not rewritten: {value!r}")
    if not (value.startswith("<") and value.endswith("@example.test>")):
        raise SystemExit(f"unexpected rewritten Message-ID {value!r}")
    # The opaque left side: only mailveil ever made it.
    return value[1:-len("@example.test>")]


def sessions(out):
    wrong = f"WRONGPW-{R}"
    s = smtplib.SMTP_SSL(HOST, SMTP_PORT, context=context(), timeout=60)
    try:
        s.login(ALICE, wrong + "-smtp")
        raise SystemExit("a wrong password was accepted")
    except smtplib.SMTPAuthenticationError:
        pass
    s.close()
    s = smtplib.SMTP_SSL(HOST, SMTP_PORT, context=context(), timeout=60)
    s.login(ALICE, ALICE_PW)
    s.sendmail(ALICE, [ALICE], smtp_message())
    s.quit()
    s.close()

    m = imaplib.IMAP4_SSL(HOST, IMAP_PORT, ssl_context=context(), timeout=60)
    try:
        m.login(ALICE, wrong + "-imap")
        raise SystemExit("a wrong password was accepted")
    except imaplib.IMAP4.error:
        pass
    m.logout()
    m = imaplib.IMAP4_SSL(HOST, IMAP_PORT, ssl_context=context(), timeout=60)
    m.login(ALICE, ALICE_PW)  # LOGIN alice@example.test "alice-pw"
    typ, _ = m.select("INBOX")
    assert typ == "OK", typ
    typ, _ = m.search(None, "SUBJECT", f"SEARCHCANARY-{R}")
    assert typ == "OK", typ
    typ, _ = m.create(f"Box{R}")
    assert typ == "OK", typ
    typ, _ = m.delete(f"Box{R}")
    assert typ == "OK", typ
    typ, data = m.append("Drafts", None, None, draft_message())
    assert typ == "OK", (typ, data)
    m.logout()

    smtp_copy = stored([MAILDIR], f"SMTPSUBJCANARY-{R}")
    draft_copy = stored([os.path.join(MAILDIR, ".Drafts")], f"DRAFTSUBJCANARY-{R}")
    smtp_id = rewritten_id(smtp_copy, f"canary-{R}@")
    draft_id = rewritten_id(draft_copy, f"canary-draft-{R}@")
    needles = [
        # name, needle, role: "zero" (a check), "control" (must be found)
        ("unstuffed body line (SMTP DATA)", f"\n.BODYCANARY-{R}", "zero"),
        ("body line, any form", f"BODYCANARY-{R}", "zero"),
        ("Subject, SMTP", f"SMTPSUBJCANARY-{R}", "zero"),
        ("Subject, IMAP APPEND", f"DRAFTSUBJCANARY-{R}", "zero"),
        ("rewritten Message-ID, SMTP", smtp_id, "zero"),
        ("rewritten Message-ID, IMAP APPEND", draft_id, "zero"),
        ("original Message-ID, SMTP", f"canary-{R}@laptop-canary.invalid", "zero"),
        ("original Message-ID, APPEND", f"canary-draft-{R}@laptop-canary.invalid", "zero"),
        ("right password", ALICE_PW, "zero"),
        ("wrong password, SMTP", f"{wrong}-smtp", "zero"),
        ("wrong password, IMAP", f"{wrong}-imap", "zero"),
        ("login and envelope address", ALICE, "zero"),
        ("AUTH PLAIN from the SMTP client", base64.b64encode(
            b"\0" + ALICE.encode() + b"\0" + ALICE_PW.encode()).decode(), "zero"),
        ("AUTH PLAIN with the wrong password", base64.b64encode(
            b"\0" + ALICE.encode() + b"\0" + f"{wrong}-smtp".encode()).decode(), "zero"),
        ("SEARCH term", f"SEARCHCANARY-{R}", "zero"),
        ("mailbox name", f"Box{R}", "zero"),
        ("control: unstuffed line, open session", f"\n.OPENCANARY-{R}", "control"),
    ]
    with open(out, "w") as f:
        json.dump([{"name": n, "needle": v, "role": r} for n, v, r in needles], f, indent=1)
    print(f"stored copies found; rewritten Message-IDs <{smtp_id}@example.test> (SMTP), "
          f"<{draft_id}@example.test> (APPEND)")


def recv_reply(sock, buf):
    """One complete SMTP reply (possibly multi-line) from a raw TLS socket."""
    lines = []
    while True:
        while b"\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {lines!r}")
            buf += chunk
        line, _, rest = bytes(buf).partition(b"\r\n")
        del buf[:len(line) + 2]
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), lines


def control():
    import socket
    raw = socket.create_connection((HOST, SMTP_PORT), timeout=60)
    sock = context().wrap_socket(raw, server_hostname=HOST)
    buf = bytearray()

    def step(command, expect):
        if command is not None:
            sock.sendall(command + b"\r\n")
        code, lines = recv_reply(sock, buf)
        if code != expect:
            raise SystemExit(f"control session: {command!r} got {lines!r}")

    step(None, 220)
    step(b"EHLO control.invalid", 250)
    step(b"AUTH PLAIN " + base64.b64encode(b"\0" + BOB.encode() + b"\0" + BOB_PW.encode()), 235)
    step(b"MAIL FROM:<" + BOB.encode() + b">", 250)
    step(b"RCPT TO:<" + BOB.encode() + b">", 250)
    step(b"DATA", 354)
    # Headers and a dot-stuffed body line, then more lines, but never the
    # final ".": mailveil holds this message while the core is taken.
    sock.sendall((f"From: {BOB}\r\nTo: {BOB}\r\nSubject: control\r\n"
                  f"Message-ID: <control-{R}@laptop-canary.invalid>\r\n\r\n"
                  f"control body line\r\n..OPENCANARY-{R}\r\n").encode()
                 + b"".join(b"control filler line %04d\r\n" % i for i in range(20)))
    print("ready", flush=True)
    sys.stdin.read()
    sock.close()


def count_all(core, canaries, tsv):
    needles = json.load(open(canaries))
    with open(core, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        size = len(mm)
        for n in needles:
            needle = n["needle"].encode()
            c, at = 0, mm.find(needle)
            while at != -1:
                c += 1
                at = mm.find(needle, at + len(needle))
            n["count"] = c
    print(f"core: {size / 1024 / 1024:.1f} MiB")
    print(f"{'what':42s} {'count':>5s}  expected  needle")
    for n in needles:
        expect = {"zero": "0", "control": ">= 1"}[n["role"]]
        shown = n["needle"].replace("\n", "\\n")
        if len(shown) > 44:
            shown = shown[:41] + "..."
        print(f"{n['name']:42s} {n['count']:5d}  {expect:8s}  {shown}")
    with open(tsv, "w") as f:
        for n in needles:
            f.write(f"{n['role']}\t{n['count']}\t{n['name']}\n")


def main():
    mode = sys.argv[1]
    if mode == "sessions":
        sessions(sys.argv[2])
    elif mode == "control":
        control()
    elif mode == "count":
        count_all(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
