"""Python smtplib through mailveil: ordinary, signed and SMTPUTF8 messages,
plus two refusals (a smuggling attempt, a provider without TLS).

Writes the bodies it sent to $W/msgs/expected/<tag>.body for check_delivery.py.
Exits non-zero on the first unexpected reply."""

import base64
import os
import smtplib
import ssl
import sys

W = os.environ["W"]
CA = os.environ["CA"]
REPO = os.environ["REPO"]
FIX = os.path.join(REPO, "tests", "fixtures", "messages")
EXPECTED = os.path.join(W, "msgs", "expected")
os.makedirs(EXPECTED, exist_ok=True)

ctx = ssl.create_default_context(cafile=CA)


def connect():
    s = smtplib.SMTP_SSL("127.0.0.1", 11465, local_hostname="py-ehlo.invalid",
                         source_address=("127.0.0.77", 0), context=ctx, timeout=30)
    s.ehlo("py-ehlo.invalid")
    return s


def body(message: bytes) -> bytes:
    at = message.find(b"\r\n\r\n")
    return message[at + 2:] if at >= 0 else b""


def fixture(name: str, tag: bytes) -> bytes:
    data = open(os.path.join(FIX, name), "rb").read()
    lines = data.split(b"\r\n")
    for i, line in enumerate(lines):
        if line.startswith(b"Subject:"):
            lines[i] = b"Subject: " + tag
            break
    return b"\r\n".join(lines)


def expect(code, reply, what):
    if reply[0] != code:
        print(f"{what}: expected {code}, got {reply[0]}", file=sys.stderr)
        sys.exit(1)


def send_and_record(s, sender, msg, tag, **options):
    """Sends one message; exits if any recipient is refused; records its body."""
    refused = s.sendmail(sender, ["bob@example.test"], msg, **options)
    if refused:
        sys.exit(f"{tag}: refused {refused}")
    open(os.path.join(EXPECTED, tag + ".body"), "wb").write(body(msg))


plain = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: interop-python\r\n"
         b"Date: Mon, 23 Nov 2026 15:00:00 -0800\r\nMessage-ID: <py.1@py-laptop.canary.invalid>\r\n"
         b"X-Mailer: canary-python-mailer\r\nReceived: from py-laptop (192.0.2.77)\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
         b"python body\r\n.leading dot\r\n\r\nlast line\r\n")
messages = {
    "interop-python": plain,
    "interop-pgp": fixture("pgp-mime-signed.eml", b"interop-pgp"),
    "interop-smime": fixture("smime-signed.eml", b"interop-smime"),
}
utf8 = fixture("smtputf8.eml", "interop-utf8 Grüße ✉".encode())

s = connect()
s.login("alice@example.test", "alice-pw")
for tag, msg in messages.items():
    send_and_record(s, "alice@example.test", msg, tag)
# SMTPUTF8 envelope: Postfix accepts it (checked in its log by run.sh); its
# LMTP hop to Dovecot 2.3 cannot carry SMTPUTF8, so it is not in the Maildir.
refused = s.sendmail("jürgen@exämple.test", ["bob@example.test"], utf8,
                     mail_options=["SMTPUTF8", "BODY=8BITMIME"])
if refused:
    sys.exit(f"utf8: refused {refused}")
# The same 8-bit UTF-8 message with an ASCII envelope reaches the Maildir.
eight = utf8.replace("interop-utf8".encode(), b"interop-8bit")
send_and_record(s, "alice@example.test", eight, "interop-8bit", mail_options=["BODY=8BITMIME"])
s.quit()

# Through the provider's STARTTLS port (login domain routes there).
s = connect()
s.login("alice@starttls.test", "alice-pw")
msg = plain.replace(b"interop-python", b"interop-starttls-upstream")
send_and_record(s, "alice@example.test", msg, "interop-starttls-upstream")
s.quit()

# SMTP smuggling against a provider that accepts bare LF: mailveil refuses.
s = connect()
s.login("alice@example.test", "alice-pw")
expect(250, s.docmd("MAIL", "FROM:<alice@example.test>"), "smuggle MAIL")
expect(250, s.docmd("RCPT", "TO:<bob@example.test>"), "smuggle RCPT")
expect(354, s.docmd("DATA"), "smuggle DATA")
s.send(b"Subject: interop-smuggle\r\n\r\nhello\n.\nMAIL FROM:<alice@example.test>\r\n"
       b"RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: interop-smuggled\r\n\r\nforged\r\n.\r\n")
expect(554, s.getreply(), "smuggled message")
expect(250, s.docmd("NOOP"), "session still in sync after refusal")
s.quit()

# A provider that offers AUTH without TLS is never sent credentials.
s = connect()
cred = base64.b64encode(b"\0alice@plain.test\0alice-pw").decode()
expect(454, s.docmd("AUTH", "PLAIN " + cred), "plain-text provider")
s.quit()
print("python clients: all replies as expected")
