"""What the relay passes to, and hides from, a chatmail-style provider: the
interop suite's Dovecot on 127.0.0.3 (offers XCHATMAIL, XDELTAPUSH, METADATA)
and Postfix on 127.0.0.3:10465 (logs every command it receives). The relay
reaches both as upstream "provider-ext" (logins @ext.test). One scenario per
invocation:

    python3 provider_ext.py caps RELAY_PORT PUSH(0|1)
    python3 provider_ext.py devicetoken RELAY_PORT PUSH(0|1)
    python3 provider_ext.py size
    python3 provider_ext.py oauth-log

Exits non-zero with a reason on the first unexpected answer."""

import base64
import imaplib
import os
import re
import smtplib
import ssl
import sys
import time

W = os.environ["W"]
CA = os.environ["CA"]
DIRECT_IMAP = ("127.0.0.3", 10993)
DIRECT_SMTP = ("127.0.0.3", 10465)
RELAY_SMTP = ("127.0.0.1", 11465)
ctx = ssl.create_default_context(cafile=CA)
RUN = str(int(time.time() * 1000))
imaplib.Commands["SETMETADATA"] = ("AUTH", "SELECTED")
imaplib.Commands["GETMETADATA"] = ("AUTH", "SELECTED")


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def expect(cond, why):
    if not cond:
        fail(why)


def relay(port):
    conn = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=30)
    conn.login("alice@ext.test", "alice-pw")
    return conn


def direct():
    conn = imaplib.IMAP4_SSL(*DIRECT_IMAP, ssl_context=ctx, timeout=30)
    conn.login("alice", "alice-pw")
    return conn


def capabilities(conn):
    """The capabilities announced after login (imaplib keeps the greeting's)."""
    typ, data = conn.capability()
    expect(typ == "OK", f"CAPABILITY: {typ} {data}")
    return set(data[-1].decode().upper().split())


def stored_token(conn):
    typ, data = conn._simple_command("GETMETADATA", '""', "/private/devicetoken")
    expect(typ == "OK", f"GETMETADATA at the provider: {typ} {data}")
    _, meta = conn._untagged_response(typ, data, "METADATA")
    return b"".join(m if isinstance(m, bytes) else b"".join(m) for m in meta if m)


def caps(port, push):
    """Post-login capabilities: XCHATMAIL and METADATA pass, XDELTAPUSH only with push."""
    d = direct()
    offered = capabilities(d)
    d.logout()
    expect({"XCHATMAIL", "XDELTAPUSH", "METADATA"} <= offered, f"the provider offers {offered}")
    r = relay(port)
    seen = capabilities(r)
    r.logout()
    expect("XCHATMAIL" in seen, f"XCHATMAIL hidden: {seen}")
    expect("METADATA" in seen, f"METADATA hidden: {seen}")
    expect(("XDELTAPUSH" in seen) == push, f"XDELTAPUSH with push={push}: {seen}")
    print(f"relay shows XCHATMAIL, METADATA{', XDELTAPUSH' if push else ''}")


def devicetoken(port, push):
    """SETMETADATA of a device token reaches the provider only with push on."""
    token = f"canary-devicetoken-{RUN}"
    r = relay(port)
    typ, data = r._simple_command("SETMETADATA", '""', f'(/private/devicetoken "{token}")')
    # The same name with an escape in it ("device\token" is read as
    # "devicetoken" by the server).
    etyp, edata = r._simple_command("SETMETADATA", '""', f'("/private/device\\token" "{token}-escaped")')
    # Other metadata is never the relay's business: it must pass either way.
    ctyp, cdata = r._simple_command("SETMETADATA", "INBOX", f'(/private/comment "comment-{RUN}")')
    r.logout()
    expect(ctyp == "OK", f"SETMETADATA /private/comment through the relay: {ctyp} {cdata}")
    d = direct()
    stored = stored_token(d)
    typ2, data2 = d._simple_command("GETMETADATA", "INBOX", "/private/comment")
    _, comment = d._untagged_response(typ2, data2, "METADATA")
    d.logout()
    expect(f"comment-{RUN}".encode() in repr(comment).encode(), f"comment not stored: {comment}")
    if push:
        expect(typ == "OK", f"SETMETADATA with push on: {typ} {data}")
        expect(token.encode() in stored, f"token not at the provider: {stored}")
    else:
        expect(typ == "NO" and b"[NOPERM]" in data[0], f"SETMETADATA with push off: {typ} {data}")
        expect(etyp == "NO" and b"[NOPERM]" in edata[0], f"escaped SETMETADATA with push off: {etyp} {edata}")
        expect(token.encode() not in stored, f"token reached the provider: {stored}")
    print(f"device token {'stored' if push else 'refused, provider never saw it'}; other metadata passes")


def size():
    """The client declares SIZE to the relay; Postfix must not see it."""
    message = b"From: alice@ext.test\r\nTo: sink@example.test\r\nSubject: interop-size\r\n\r\nbody\r\n"
    for name, (host, port), user in [
        ("relay", RELAY_SMTP, "alice@ext.test"),
        ("direct", DIRECT_SMTP, "alice"),
    ]:
        s = smtplib.SMTP_SSL(host, port, context=ctx, timeout=30)
        s.ehlo()
        expect(s.has_extn("size"), f"{name}: no SIZE offered, so smtplib would declare none")
        s.login(user, "alice-pw")
        s.sendmail(f"size-{name}-{RUN}@ext.test", ["sink@example.test"], message)
        s.quit()
    lines = {}
    for _ in range(50):
        log = open(f"{W}/log/postfix.log", errors="replace").read()
        for name in ("relay", "direct"):
            m = re.search(rf"< \S+: mail from:<size-{name}-{RUN}@ext.test>.*", log, re.I)
            if m:
                lines[name] = m.group(0)
        if len(lines) == 2:
            break
        time.sleep(0.2)
    expect(len(lines) == 2, f"Postfix logged MAIL FROM for {sorted(lines)} only")
    expect("size=" in lines["direct"].lower(), f"control: direct smtplib declared no SIZE: {lines['direct']}")
    expect("size=" not in lines["relay"].lower(), f"the relay forwarded SIZE: {lines['relay']}")
    print(f"Postfix saw {lines['relay'].split(': ', 1)[1]!r} from the relay")


def oauth_log():
    """What Dovecot received in OAUTHBEARER: the provider's name and port, not the relay's."""
    log = open(f"{W}/log/dovecot.log", errors="replace").read()
    seen = {}
    for m in re.finditer(r"client in: AUTH\t\d+\tOAUTHBEARER\t.*?service=(\w+)\t.*?resp=([A-Za-z0-9+/=]+)", log):
        decoded = base64.b64decode(m.group(2))
        if b"a=alice@ext.test," in decoded:
            seen.setdefault(m.group(1), []).append(decoded)
    expect({"imap", "smtp"} <= set(seen), f"OAUTHBEARER seen by Dovecot for {sorted(seen)}")
    want = {"imap": b"\x01port=10993\x01", "smtp": b"\x01port=10465\x01"}
    for service, messages in seen.items():
        for msg in messages:
            expect(b"\x01host=mail.provider.test\x01" in msg, f"{service}: {msg!r}")
            expect(want[service] in msg, f"{service}: {msg!r}")
            expect(b"localhost" not in msg and b"1199" not in msg and b"1146" not in msg, f"{service}: {msg!r}")
    print(f"Dovecot saw host=mail.provider.test and the provider's ports ({sum(map(len, seen.values()))} logins)")


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "caps":
        caps(int(sys.argv[2]), sys.argv[3] == "1")
    elif what == "devicetoken":
        devicetoken(int(sys.argv[2]), sys.argv[3] == "1")
    elif what == "size":
        size()
    elif what == "oauth-log":
        oauth_log()
    else:
        fail(f"unknown scenario {what}")
