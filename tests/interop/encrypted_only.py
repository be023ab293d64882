"""`[policy] outgoing = "encrypted-only"` against real Postfix and Dovecot,
with messages encrypted by the real tools: a PGP/MIME message and an inline
PGP message from gpg, an S/MIME message from `openssl smime -encrypt`, an
Autocrypt Setup Message, and a plain one.

    python3 encrypted_only.py RELAY_SMTP_PORT

Sends each through the relay as alice@example.test (to alice) and expects:
the plain message refused with 550 5.7.1 before Postfix sees it, every other
one accepted and stored; the stored PGP/MIME message still decrypts to what
was encrypted. Exits non-zero with a reason on the first surprise."""

import email
import glob
import os
import smtplib
import ssl
import subprocess
import sys
import time

W = os.environ["W"]
CA = os.environ["CA"]
PORT = int(sys.argv[1])
SOURCE = ("127.0.0.77", 0)
GNUPG = os.path.join(W, "gnupg")
RUN = str(int(time.time() * 1000))
ctx = ssl.create_default_context(cafile=CA)


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def gpg(*args, data=None):
    out = subprocess.run(["gpg", "--batch", "--quiet", "--homedir", GNUPG, *args],
                         input=data, capture_output=True, check=False)
    if out.returncode != 0:
        fail(f"gpg {' '.join(args)}: {out.stderr.decode(errors='replace')}")
    return out.stdout


def crlf(text: bytes) -> bytes:
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def head(subject, extra=""):
    return (f"From: alice@example.test\nTo: alice@example.test\nSubject: {subject}\n"
            f"Message-ID: <{subject}@example.test>\nMIME-Version: 1.0\n{extra}").encode()


os.makedirs(GNUPG, mode=0o700, exist_ok=True)
have_key = subprocess.run(["gpg", "--batch", "--homedir", GNUPG, "--list-secret-keys", "alice@example.test"],
                          capture_output=True, check=False).returncode == 0
if not have_key:
    gpg("--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
        "Alice <alice@example.test>", "ed25519", "cert,sign", "never")
    fpr = [line.split(b":")[9] for line in gpg("--with-colons", "--list-keys", "alice@example.test").splitlines()
           if line.startswith(b"fpr:")][0].decode()
    gpg("--pinentry-mode", "loopback", "--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr", "never")


def encrypt(data: bytes) -> bytes:
    return gpg("--trust-model", "always", "--armor", "--encrypt", "-r", "alice@example.test", data=data)


SECRET = f"the secret words {RUN}".encode()
pgp_mime = head(f"enc-pgpmime-{RUN}",
                'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\n'
                ' boundary="enc-b"\n') + b"\n" + (
    b"--enc-b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n"
    b"--enc-b\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\n\n"
    + encrypt(b"Content-Type: text/plain\n\n" + SECRET + b"\n") + b"\n--enc-b--\n")
inline = head(f"enc-inline-{RUN}") + b"\n" + encrypt(SECRET + b"\n")
body = os.path.join(W, "msgs", f"smime-{RUN}.txt")
with open(body, "wb") as f:
    f.write(b"Content-Type: text/plain\n\n" + SECRET + b"\n")
smime = subprocess.run(
    ["openssl", "smime", "-encrypt", "-aes256", "-in", body, "-from", "alice@example.test",
     "-to", "alice@example.test", "-subject", f"enc-smime-{RUN}",
     # An RSA recipient certificate: `openssl smime` encrypts to RSA keys
     # only (the interop's others are ECDSA).
     os.path.join(W, "tls", "rsa-cert.pem")],
    capture_output=True, check=True).stdout
if b"enveloped-data" not in smime:
    fail("openssl smime made no enveloped-data message")
setup = head(f"enc-setup-{RUN}", "Autocrypt-Setup-Message: v1\n"
             "Content-Type: multipart/mixed; boundary=s\n") + b"\n--s\nContent-Type: text/plain\n\nsetup\n--s--\n"
plain = head(f"enc-plain-{RUN}") + b"\nnot encrypted at all\n"


def send(message: bytes):
    s = smtplib.SMTP_SSL("127.0.0.1", PORT, context=ctx, timeout=60, source_address=SOURCE)
    s.ehlo("enc-client.invalid")
    s.login("alice@example.test", "alice-pw")
    try:
        s.sendmail("alice@example.test", ["alice@example.test"], crlf(message))
        return 250, b""
    except smtplib.SMTPDataError as e:
        return e.smtp_code, e.smtp_error
    finally:
        s.quit()


code, text = send(plain)
if code != 550 or not text.startswith(b"5.7.1 Not sent: this relay only sends end-to-end encrypted"):
    fail(f"plain message: {code} {text!r}")
print(f"plain message refused: {code} {text[:60].decode()}...")
for name, message in [("PGP/MIME", pgp_mime), ("inline PGP", inline), ("S/MIME", smime),
                      ("Autocrypt Setup", setup)]:
    code, text = send(message)
    if code != 250:
        fail(f"{name}: {code} {text!r}")
    print(f"{name} accepted")

maildir = os.path.join(W, "mail", "alice", "Maildir")


def stored(subject):
    for _ in range(50):
        for path in glob.glob(os.path.join(maildir, "new", "*")) + glob.glob(os.path.join(maildir, "cur", "*")):
            data = open(path, "rb").read()
            if f"Subject: {subject}".encode() in data:
                return data
        time.sleep(0.2)
    return None


if stored(f"enc-plain-{RUN}") is not None:
    fail("the refused plain message reached the provider")
got = stored(f"enc-pgpmime-{RUN}")
if got is None:
    fail("the PGP/MIME message was not stored")
parts = email.message_from_bytes(got).get_payload()
decrypted = gpg("--decrypt", data=parts[1].get_payload(decode=True))
if SECRET not in decrypted:
    fail("the stored PGP/MIME message does not decrypt to what was sent")
for subject in (f"enc-inline-{RUN}", f"enc-smime-{RUN}", f"enc-setup-{RUN}"):
    if stored(subject) is None:
        fail(f"{subject} was not stored")
print("stored: PGP/MIME decrypts as sent; inline PGP, S/MIME and the setup message are there; "
      "the plain one is not")
