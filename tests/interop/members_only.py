"""Members only (`[access]`) against real Postfix and Dovecot.

    python3 members_only.py RELAY_SMTP_PORT RELAY_IMAP_PORT DELAY_MS

The relay's list holds alice@example.test only. bob@example.test has a real
account at both servers (password bob-pw) but is not a member. Expects:
- bob, with his right password, refused over IMAP and SMTP with the relay's
  one text, no sooner than the delay, and neither Dovecot nor Postfix ever
  hears of him (their logs gain no line naming bob, while alice's refused
  logins do add lines: the control);
- alice with a wrong password: the very same texts (not the servers' own);
- alice with her password: reads her INBOX and sends a message that Postfix
  accepts.
Exits non-zero with a reason on the first surprise."""

import imaplib
import os
import smtplib
import ssl
import sys
import time

W = os.environ["W"]
CA = os.environ["CA"]
SMTP_PORT, IMAP_PORT, DELAY = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000
SOURCE = ("127.0.0.77", 0)
ctx = ssl.create_default_context(cafile=CA)
IMAP_TEXT = b"[AUTHENTICATIONFAILED] Authentication failed."
SMTP_TEXT = (535, b"5.7.8 Authentication credentials invalid")


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def mentions(name):
    n = 0
    for log in ("dovecot.log", "postfix.log"):
        with open(os.path.join(W, "log", log), errors="replace") as f:
            n += sum(name in line for line in f)
    return n


def imap_refusal(login, password):
    c = imaplib.IMAP4_SSL("127.0.0.1", IMAP_PORT, ssl_context=ctx)
    started = time.monotonic()
    try:
        c.login(login, password)
    except imaplib.IMAP4.error as e:
        took = time.monotonic() - started
        c.logout()
        return e.args[0] if isinstance(e.args[0], bytes) else str(e.args[0]).encode(), took
    fail(f"IMAP login of {login} succeeded")


def smtp_refusal(login, password):
    s = smtplib.SMTP_SSL("127.0.0.1", SMTP_PORT, context=ctx, source_address=SOURCE)
    s.ehlo("client.invalid")
    started = time.monotonic()
    try:
        s.login(login, password)
    except smtplib.SMTPAuthenticationError as e:
        took = time.monotonic() - started
        s.quit()
        return (e.smtp_code, e.smtp_error), took
    fail(f"SMTP login of {login} succeeded")


before, alice_before = mentions("bob"), mentions("alice")
time.sleep(0.5)
took_by = {}
for login, password in (("bob@example.test", "bob-pw"), ("alice@example.test", "wrong")):
    text, took = imap_refusal(login, password)
    took_by[f"IMAP {login.split('@')[0]}"] = took
    if text != IMAP_TEXT:
        fail(f"IMAP {login}: {text!r}, expected {IMAP_TEXT!r}")
    if took < DELAY:
        fail(f"IMAP {login}: refused after {took:.3f} s, before the delay")
    reply, took = smtp_refusal(login, password)
    took_by[f"SMTP {login.split('@')[0]}"] = took
    if reply != SMTP_TEXT:
        fail(f"SMTP {login}: {reply!r}, expected {SMTP_TEXT!r}")
    if took < DELAY:
        fail(f"SMTP {login}: refused after {took:.3f} s, before the delay")
time.sleep(1)
if mentions("bob") != before:
    fail("Dovecot or Postfix heard of bob, who is not a member")
# The control: the servers do log refused logins, so silence about bob means
# something (alice's wrong password reached them and was logged).
if mentions("alice") <= alice_before:
    fail("Dovecot and Postfix logged nothing of alice's refused logins: the check above proves nothing")

c = imaplib.IMAP4_SSL("127.0.0.1", IMAP_PORT, ssl_context=ctx)
c.login("alice@example.test", "alice-pw")
typ, _ = c.select("INBOX")
if typ != "OK":
    fail("alice could not select INBOX")
c.logout()
s = smtplib.SMTP_SSL("127.0.0.1", SMTP_PORT, context=ctx, source_address=SOURCE)
s.login("alice@example.test", "alice-pw")
refused = s.sendmail("alice@example.test", ["alice@example.test"],
                     b"From: alice@example.test\r\nTo: alice@example.test\r\n"
                     b"Subject: interop-members-only\r\n\r\nfrom a member\r\n")
s.quit()
if refused:
    fail(f"refused recipients: {refused}")
# Recorded, not asserted: a member's refusal comes when Dovecot answers
# (its own failure delay), a stranger's at the relay's delay (README).
print("refusal times: " + ", ".join(f"{k} {v:.2f} s" for k, v in took_by.items()))
print("members only: strangers and refused members alike, members served")
