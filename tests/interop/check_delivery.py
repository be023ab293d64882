"""Reads bob's Maildir at the provider and checks what mailveil delivered:
each message exactly once, no client address, EHLO name or identifying
header anywhere, bodies byte-identical to what the clients sent."""

import glob
import os
import re
import sys
import time

W = os.environ["W"]
MAILDIR = os.path.join(W, "mail", "bob", "Maildir")
EXPECTED = os.path.join(W, "msgs", "expected")
TAGS = ["interop-swaks", "interop-curl", "interop-python", "interop-pgp",
        "interop-smime", "interop-8bit", "interop-neomutt", "interop-starttls-upstream",
        "interop-fcc-neomutt", "interop-quoted-sender",
        # pipelining: lock-step swaks, swaks --pipeline, the BDAT client
        "interop-lockstep", "interop-pipelined", "interop-bdat-pipelined"]
# Postfix accepts the SMTPUTF8-envelope message (run.sh checks its log), but
# whether its LMTP hop to Dovecot 2.3 delivers or bounces it varies: 0 or 1 copy.
OPTIONAL = ["interop-utf8"]
FORBIDDEN = [b"127.0.0.77", b"swaks-ehlo.invalid", b"curl-ehlo.invalid", b"py-ehlo.invalid",
             b"neomutt-laptop.invalid", b"curl-laptop.invalid", b"canary", b"192.0.2.77",
             b"interop-smuggled"]
FORBIDDEN_HEADERS = [b"user-agent", b"x-mailer", b"x-originating-ip"]


def load():
    found = []
    for path in glob.glob(os.path.join(MAILDIR, "new", "*")) + glob.glob(os.path.join(MAILDIR, "cur", "*")):
        found.append(open(path, "rb").read())
    return found


def subject(msg: bytes) -> str:
    m = re.search(rb"^Subject: ([^\r\n]*)", msg, re.M)
    return m.group(1).decode("utf-8", "replace") if m else ""


def split(msg: bytes):
    at = msg.find(b"\r\n\r\n")
    return msg[:at + 2], msg[at + 2:]


deadline = time.time() + 30
while True:
    msgs = load()
    if len(msgs) >= len(TAGS) or time.time() > deadline:
        break
    time.sleep(0.2)

errors = []
by_tag = {}
for msg in msgs:
    tag = next((t for t in TAGS + OPTIONAL if subject(msg).startswith(t)), None)
    if tag is None:
        errors.append(f"unexpected message with subject {subject(msg)!r}")
        continue
    by_tag.setdefault(tag, []).append(msg)

for tag in TAGS + OPTIONAL:
    got = by_tag.get(tag, [])
    if tag in OPTIONAL and not got:
        continue
    if len(got) != 1:
        errors.append(f"{tag}: delivered {len(got)} times")
        continue
    msg = got[0]
    header, body = split(msg)
    for bad in FORBIDDEN:
        if bad in msg:
            errors.append(f"{tag}: contains {bad!r}")
    for line in header.split(b"\r\n"):
        name = line.split(b":", 1)[0].lower()
        if name in FORBIDDEN_HEADERS:
            errors.append(f"{tag}: header {name!r} survived")
    authenticated = b"with ESMTPSA" in header or b"with UTF8SMTPSA" in header
    if not authenticated or b"using TLSv1." not in header or b"[127.0.0.1]" not in header:
        errors.append(f"{tag}: provider did not record an authenticated TLS session from the relay")
    expected = os.path.join(EXPECTED, tag + ".body")
    if os.path.exists(expected):
        want = open(expected, "rb").read()
        if body != want:
            errors.append(f"{tag}: body differs ({len(body)} vs {len(want)} bytes)")
    if tag == "interop-curl" and body != b"\r\ncurl body line\r\n.dot line\r\n":
        errors.append(f"interop-curl: body differs: {body!r}")
    if re.search(rb"^Date: .*[+-]\d{4}", header, re.M) and not re.search(rb"^Date: .*\+0000", header, re.M):
        errors.append(f"{tag}: Date not in UTC")
    if re.search(rb"^Date: ", header, re.M) and not re.search(rb"^Date: .* \d\d:\d\d:00 \+0000\r$", header, re.M):
        errors.append(f"{tag}: Date not rounded down to the minute")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"{len(msgs)} messages checked")
