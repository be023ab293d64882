"""APPEND through mailveil must not change mail the user did not just
compose: delivered mail, archives, old Sent folders. Runs against the
interop suite's Dovecot; what was stored is read back directly from it.

    python3 archive.py <scenario>

Scenarios:
  trace        one delivered message per trace field, otherwise fresh and
               full of identifying headers: each stored byte for byte, its
               date-time argument included
  old          an old Sent copy (no trace field): byte for byte
  dkim         a DKIM-signed message (dkimpy, test key, no DNS) still
               verifies after the round trip
  thunderbird  a Thunderbird-style Sent copy, just written: still cleaned,
               and its date-time stored in UTC to the minute
  mbsync       mbsync pushes an archive with an old Sent folder and
               delivered mail through the relay: every message identical
               but for the X-TUID field mbsync adds itself
Exits non-zero with a reason on the first unexpected answer."""

import base64
import os
import re
import subprocess
import sys
import time

from imap_clients import RUN, direct, expect, fail, fetch_one, fresh_date, login, relay

TRACE_FIELDS = [
    ("Received", "from mx.example.net (mx.example.net [198.51.100.7]) by mail.example.test\r\n"
                 "\twith ESMTPS id 4Xy; Tue, 3 Nov 2026 10:11:09 +0100"),
    ("Return-Path", "<carol@example.net>"),
    ("Delivered-To", "alice@example.test"),
    ("X-Original-To", "alice@example.test"),
    ("ARC-Seal", "i=1; a=rsa-sha256; d=example.net; s=arc; cv=none; b=AbCd"),
    ("ARC-Message-Signature", "i=1; a=rsa-sha256; d=example.net; s=arc; h=from; bh=Ef; b=Gh"),
    ("ARC-Authentication-Results", "i=1; mx.example.net; spf=pass"),
    ("Authentication-Results", "mail.example.test; dkim=pass header.d=example.net"),
    ("DKIM-Signature", "v=1; a=rsa-sha256; d=example.net; s=s1; h=from; bh=Ef; b=Gh"),
    ("X-Envelope-From", "<carol@example.net>"),
    ("X-Envelope-To", "<alice@example.test>"),
]


def imap_date(t, zone="+0100"):
    hours = int(zone[:3])
    return time.strftime('"%d-%b-%Y %H:%M:%S ' + zone + '"', time.gmtime(t + hours * 3600))


def delivered(subject, field, value):
    """Fresh and full of identifying headers, except for one trace field."""
    return (f"{field}: {value}\r\n"
            f"From: Carol <carol@example.net>\r\nTo: alice@example.test\r\n"
            f"Subject: {subject}\r\nDate: {fresh_date().decode()}\r\n"
            f"Message-ID: <CAFoo123.{subject}@mail.example.net>\r\n"
            f"User-Agent: archive-canary-agent\r\nX-Mailer: archive-canary-mailer\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"delivered body\r\n").encode()


def internaldate(m, mailbox):
    typ, _ = m.select(mailbox)
    expect(typ == "OK", f"SELECT {mailbox}")
    typ, data = m.uid("SEARCH", None, "ALL")
    uid = data[0].split()[-1]
    typ, data = m.uid("FETCH", uid, "(INTERNALDATE)")
    return uid, re.search(rb'INTERNALDATE "([^"]+)"', data[0]).group(1).decode()


def append_and_read(mailbox, msg, date_time):
    """APPENDs through the relay, and the same directly to a twin mailbox;
    returns the bytes stored through the relay, and its INTERNALDATE with
    the one stored directly (Dovecot keeps the instant, not the zone given:
    the same value both ways means the date-time went through unchanged)."""
    m = login(relay())
    m.create(mailbox)
    typ, data = m.append(mailbox, r"(\Seen)", date_time, msg)
    expect(typ == "OK", f"APPEND: {data}")
    m.logout()
    d = login(direct())
    d.create(mailbox + "-direct")
    typ, data = d.append(mailbox + "-direct", r"(\Seen)", date_time, msg)
    expect(typ == "OK", f"direct APPEND: {data}")
    _, internal_direct = internaldate(d, mailbox + "-direct")
    uid, internal = internaldate(d, mailbox)
    stored = fetch_one(d, uid)
    d.logout()
    return stored, internal, internal_direct


def trace():
    fresh_dt = imap_date(time.time())
    for i, (field, value) in enumerate(TRACE_FIELDS):
        msg = delivered(f"archive-trace-{i}-{RUN}", field, value)
        # A fresh Date and a fresh date-time: the trace field alone decides
        # (old dates are the `old` scenario's).
        stored, internal, direct_internal = append_and_read(f"Trace-{RUN}", msg, fresh_dt)
        expect(stored == msg, f"{field}: stored {len(stored)} bytes, sent {len(msg)}; changed:\n"
               f"{stored[:400]!r}")
        expect(internal == direct_internal,
               f"{field}: date-time stored as {internal}, directly {direct_internal}")
    print(f"{len(TRACE_FIELDS)} delivered messages, one per trace field: each stored byte for byte, "
          "date-time as direct")


def old():
    msg = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
           b"Subject: archive-old-sent-" + RUN.encode() + b"\r\n"
           b"Date: Tue, 3 Nov 2026 10:11:09 +0100\r\n"
           b"Message-ID: <20261103101109.GA7@alices-macbook.local>\r\n"
           b"User-Agent: Mutt/2.2.12 (2023-09-09)\r\n\r\nsent long ago\r\n")
    stored, internal, direct_internal = append_and_read(
        f"OldSent-{RUN}", msg, '"03-Nov-2026 10:11:09 +0100"')
    expect(stored == msg, f"old Sent copy changed:\n{stored!r}")
    expect(internal == direct_internal, f"date-time stored as {internal}, directly {direct_internal}")
    print("an old Sent copy is stored byte for byte, date-time as direct")


def dkim_():
    # dkimpy from Debian (python3-dkim): run this scenario with /usr/bin/python3.
    import dkim
    key_file = os.path.join(os.environ["W"], f"dkim-{RUN}.key")
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", key_file, "2048"],
                   check=True, capture_output=True)
    private = open(key_file, "rb").read()
    public = subprocess.run(["openssl", "rsa", "-in", key_file, "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    os.remove(key_file)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        expect(name.rstrip(".") == "s1._domainkey.example.net", f"DNS asked for {name}")
        return record

    body = (f"From: Carol <carol@example.net>\r\nTo: alice@example.test\r\n"
            f"Subject: archive-dkim-{RUN}\r\nDate: {fresh_date().decode()}\r\n"
            f"Message-ID: <dkim.{RUN}@mail.example.net>\r\n"
            f"User-Agent: archive-canary-agent\r\n\r\nsigned body\r\n").encode()
    sig = dkim.sign(body, b"s1", b"example.net", private,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id", b"user-agent"])
    msg = sig + body
    expect(dkim.verify(msg, dnsfunc=dnsfunc), "the test signature does not verify before the trip")
    stored, _, _ = append_and_read(f"Dkim-{RUN}", msg, None)
    expect(stored == msg, f"signed message changed:\n{stored[:400]!r}")
    expect(dkim.verify(stored, dnsfunc=dnsfunc), "DKIM signature fails after the round trip")
    print("a DKIM-signed message still verifies after APPEND through the relay")


def thunderbird():
    subject = f"archive-tb-sent-{RUN}"
    msg = (f"Message-ID: <4b3e2f10-9c1d-4e8a-b7f2-{RUN[-12:].rjust(12, '0')}@alices-laptop.lan>\r\n"
           f"Date: {fresh_date().decode()}\r\nMIME-Version: 1.0\r\n"
           f"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0\r\n"
           f"Content-Language: en-US\r\nTo: bob@example.test\r\n"
           f"From: Alice <alice@example.test>\r\nSubject: {subject}\r\n"
           f"X-Mozilla-Draft-Info: internal/draft; vcard=0; receipt=0; DSN=0; uuencode=0\r\n"
           f"X-Identity-Key: id1\r\nX-Account-Key: account1\r\n"
           f"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
           f"Content-Transfer-Encoding: 7bit\r\n\r\nthunderbird sent body\r\n").encode()
    # A date-time with seconds (37) in a zone that is not UTC (+0100): the
    # twin stored directly keeps the seconds; through the relay only the
    # UTC minute may arrive.
    sent_at = time.time() // 60 * 60 + 37
    stored, internal, internal_direct = append_and_read(f"TbSent-{RUN}", msg, imap_date(sent_at))
    head, _, body = stored.partition(b"\r\n\r\n")
    expect(body == b"thunderbird sent body\r\n", f"body changed: {body!r}")
    low = head.lower()
    for bad in (b"user-agent", b"content-language", b"x-mozilla", b"x-identity-key",
                b"x-account-key", b"alices-laptop"):
        expect(bad not in low, f"Sent copy still carries {bad!r}:\n{head.decode()}")
    date = re.search(rb"^Date: (.*)$", head, re.M).group(1)
    expect(re.fullmatch(rb"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:00 \+0000", date.strip()),
           f"Date not UTC to the minute: {date!r}")
    expect(re.fullmatch(r"\d\d-\w{3}-\d{4} \d\d:\d\d:00 [+-]\d{4}", internal),
           f"date-time not to the minute: {internal}")
    expect(re.fullmatch(r"\d\d-\w{3}-\d{4} \d\d:\d\d:37 [+-]\d{4}", internal_direct),
           f"control: the direct twin lost its seconds: {internal_direct}")
    got = time.mktime(time.strptime(internal[:-6], "%d-%b-%Y %H:%M:%S"))
    want = time.mktime(time.strptime(internal_direct[:-6], "%d-%b-%Y %H:%M:%S")) - 37
    expect(internal[-5:] == internal_direct[-5:] and got == want,
           f"date-time is not the same instant's minute: {internal} vs {internal_direct}")
    print("a Thunderbird-style Sent copy is cleaned; Date and date-time in UTC to the minute")


def mbsync():
    """An archive pushed with mbsync into new folders, through the relay."""
    w = os.environ["W"]
    local = os.path.join(w, f"mbsync-archive-{RUN}")
    messages = {}
    old_t = time.time() - 200 * 86400
    for folder, items in {
        "OldSent": [
            (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
             b"Subject: mbsync-old-sent-%d\r\nDate: Mon, 11 May 2026 09:0%d:13 +0200\r\n"
             b"Message-ID: <20260511090%d13.GA%d@alices-macbook.local>\r\n"
             b"User-Agent: NeoMutt/20231103\r\nX-Mailer: old-canary\r\n\r\nold sent %d\r\n") % (i, i, i, i, i)
            for i in range(3)],
        "OldInbox": [
            (b"Return-Path: <carol@example.net>\r\nDelivered-To: alice@example.test\r\n"
             b"Received: from mx.example.net by mail.example.test; Mon, 11 May 2026 10:00:00 +0200\r\n"
             b"From: carol@example.net\r\nTo: alice@example.test\r\nSubject: mbsync-delivered-%d\r\n"
             b"Date: Mon, 11 May 2026 09:59:0%d +0200\r\nMessage-ID: <CAFoo%d@mail.gmail.com>\r\n"
             b"User-Agent: carol-agent\r\n\r\ndelivered %d\r\n") % (i, i, i, i)
            for i in range(3)],
    }.items():
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(local, folder, sub), exist_ok=True)
        for i, msg in enumerate(items):
            path = os.path.join(local, folder, "cur", f"{int(old_t)}.{i}.archive:2,S")
            with open(path, "wb") as f:
                f.write(msg)
            os.utime(path, (old_t + i, old_t + i))
            messages[re.search(rb"^Subject: (.*)\r$", msg, re.M).group(1)] = (folder, msg)
    rc = os.path.join(w, f"mbsyncrc-archive-{RUN}")
    with open(rc, "w") as f:
        f.write(f"""IMAPAccount relay
Host localhost
Port 11993
User alice@example.test
Pass alice-pw
SSLType IMAPS
CertificateFile {os.environ["CA"]}

IMAPStore relay
Account relay

MaildirStore local
Path {local}/
SubFolders Verbatim

Channel push
Far :relay:Archive-{RUN}-
Near :local:
Patterns OldSent OldInbox
Create Far
Sync Push
SyncState *
""")
    run = subprocess.run(["mbsync", "-q", "-c", rc, "-a"], capture_output=True, text=True, timeout=120)
    expect(run.returncode == 0, f"mbsync failed: {run.stderr}")
    d = login(direct())
    for subject, (folder, msg) in messages.items():
        typ, _ = d.select(f"Archive-{RUN}-{folder}")
        expect(typ == "OK", f"no folder Archive-{RUN}-{folder}")
        typ, data = d.uid("SEARCH", None, "HEADER", "Subject", subject.decode())
        uids = data[0].split()
        expect(len(uids) == 1, f"{subject!r}: {len(uids)} copies")
        stored = fetch_one(d, uids[0])
        # mbsync itself adds one X-TUID field at the end of the header (it
        # does so directly too): that, and nothing else, may differ.
        head, blank, body = msg.partition(b"\r\n\r\n")
        tuid = re.fullmatch(re.escape(head) + rb"\r\nX-TUID: [A-Za-z0-9+/]{12}" +
                            re.escape(blank + body), stored)
        expect(tuid is not None, f"{subject!r} changed by the push:\n{stored!r}\nsent\n{msg!r}")
    d.logout()
    print(f"mbsync pushed {len(messages)} archived messages (old Sent, delivered): all identical")


SCENARIOS = {"trace": trace, "old": old, "dkim": dkim_, "thunderbird": thunderbird, "mbsync": mbsync}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        fail("usage: archive.py " + "|".join(SCENARIOS))
    SCENARIOS[sys.argv[1]]()
