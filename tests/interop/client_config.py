"""`mailveil client-config` output, read by real consumers.

    python3 client_config.py mobileconfig PROFILE CA HOST IMAP_PORT SMTP_PORT
    python3 client_config.py qr OUTPUT

mobileconfig: Python's plistlib loads the profile; its payloads carry the
types and keys Apple documents for a mail account (com.apple.mail.managed)
and a root certificate (com.apple.security.root), for HOST and the ports,
and the root is CA byte for byte.

qr: OUTPUT is what `client-config --format dclogin` printed (the URI, then
the terminal QR code). The half blocks are turned back into an image
(netpbm, 8 pixels a module) and zbarimg, a real QR reader, decodes it: the
text must be the URI. Exits non-zero with a reason on the first surprise."""

import os
import plistlib
import ssl
import subprocess
import sys
import tempfile


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def mobileconfig(path, ca, host, imap_port, smtp_port):
    with open(path, "rb") as f:
        profile = plistlib.load(f)
    if profile.get("PayloadType") != "Configuration" or profile.get("PayloadVersion") != 1:
        fail(f"not a configuration profile: {profile!r}")
    kinds = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    mail = kinds.get("com.apple.mail.managed") or fail(f"no mail payload: {list(kinds)}")
    want = {
        "EmailAccountType": "EmailTypeIMAP",
        "IncomingMailServerHostName": host,
        "IncomingMailServerPortNumber": int(imap_port),
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": host,
        "OutgoingMailServerPortNumber": int(smtp_port),
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
    }
    for key, value in want.items():
        if mail.get(key) != value:
            fail(f"mail payload {key} = {mail.get(key)!r}, expected {value!r}")
    for secret in ("IncomingPassword", "OutgoingPassword", "EmailAddress"):
        if secret in mail:
            fail(f"the profile holds {secret}")
    root = kinds.get("com.apple.security.root") or fail("no root payload")
    with open(ca) as f:
        if root["PayloadContent"] != ssl.PEM_cert_to_DER_cert(f.read()):
            fail("the root payload is not the CA")
    print(f"plistlib: mail account for {host}:{imap_port}/{smtp_port} and the CA as root")


def qr(output):
    with open(output, encoding="utf-8") as f:
        lines = f.read().splitlines()
    uri, drawing = lines[0], lines[1:]
    rows = []
    for line in drawing:
        line = line.removeprefix("\x1b[30;47m").removesuffix("\x1b[0m")
        top = [c in "\u2580\u2588" for c in line]
        bottom = [c in "\u2584\u2588" for c in line]
        rows += [top, bottom]
    if not rows or len(rows[0]) < 21:
        fail(f"no QR drawing after the URI ({len(rows)} rows)")
    scale = 8
    width = len(rows[0]) * scale
    with tempfile.NamedTemporaryFile(suffix=".pbm", delete=False) as img:
        img.write(f"P1\n{width} {len(rows) * scale}\n".encode())
        for row in rows:
            line = " ".join("1" if dark else "0" for dark in row for _ in range(scale))
            img.write((line + "\n").encode() * scale)
    decoded = subprocess.run(["zbarimg", "--raw", "-q", img.name], capture_output=True, text=True, check=False)
    os.unlink(img.name)
    if decoded.returncode != 0:
        fail(f"zbarimg could not read the QR code: {decoded.stderr.strip()}")
    if decoded.stdout.strip() != uri:
        fail(f"zbarimg read {decoded.stdout.strip()!r}, the URI is {uri!r}")
    print("zbarimg decodes the terminal QR code to the dclogin URI")


if sys.argv[1] == "mobileconfig":
    mobileconfig(*sys.argv[2:7])
elif sys.argv[1] == "qr":
    qr(sys.argv[2])
else:
    fail(f"unknown mode {sys.argv[1]}")
