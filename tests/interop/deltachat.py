"""The real Delta Chat core (deltachat-rpc-server, pinned) through mailveil:
two accounts, both with IMAP and SMTP through the relay, against the
interop suite's Postfix and Dovecot.

    deltachat.py LABEL

Checks, each printed as one line: both accounts configure; a Secure-Join
(bob scans alice's QR code: its first steps travel with Secure-Join headers
outside the encryption) finishes on both sides; an encrypted 1:1 message; a quoted reply; a reaction; a 2 MB attachment, byte for byte;
a group; and no message arrives twice. Exits non-zero on the first
failure, with the reason."""

import hashlib
import os
import subprocess
import sys
import time

from deltachat_rpc_client import DeltaChat, EventType, Rpc

W = os.environ["W"]
LABEL = sys.argv[1] if len(sys.argv) > 1 else "default"
RUN = f"{LABEL}-{int(time.time())}"
# example.test: the suite's plain provider. ext.test: its chatmail-style
# address (127.0.0.3), whose Dovecot offers XCHATMAIL and XDELTAPUSH.
DOMAIN = os.environ.get("DC_DOMAIN", "example.test")
ACCOUNTS = [(f"alice@{DOMAIN}", "alice-pw"), (f"bob@{DOMAIN}", "bob-pw")]
DEADLINE_S = 120


def fail(why):
    print(f"deltachat ({LABEL}): {why}", file=sys.stderr)
    sys.exit(1)


def expect(cond, why):
    if not cond:
        fail(why)


# DC_ONE_PORT: the relay's port serving both protocols by ALPN (the core
# offers ALPN "imap" and "smtp" on ports other than 993 and 465).
ONE_PORT = int(os.environ["DC_ONE_PORT"]) if os.environ.get("DC_ONE_PORT") else None


def transport(addr, password):
    return {
        "addr": addr,
        "password": password,
        "imapServer": "localhost",
        "imapPort": ONE_PORT or 11993,
        "imapSecurity": "ssl",
        "imapUser": addr,
        "smtpServer": "localhost",
        "smtpPort": ONE_PORT or 11465,
        "smtpSecurity": "ssl",
        "smtpUser": addr,
        # The suite's private CA is not in Delta Chat's roots.
        "certificateChecks": "acceptInvalidCertificates",
    }


def configure(account, addr, password):
    """Sets up the account's transport: from the settings above, or, with
    DC_FROM_QR naming the mailveil binary, from the dclogin: URI that
    `mailveil client-config` prints (read by the core's own QR parser
    first, then used as a member would scan it)."""
    mailveil = os.environ.get("DC_FROM_QR")
    if not mailveil:
        account.add_or_update_transport(transport(addr, password))
        return
    out = subprocess.run(
        [mailveil, "client-config", "--format", "dclogin", "--host", "localhost",
         "--imap-port", "11993", "--smtp-port", "11465", "--accept-invalid-certificates", "--no-qr"],
        input=f"{addr}\n{password}\n", capture_output=True, text=True, check=False)
    expect(out.returncode == 0, f"client-config failed: {out.stderr}")
    uri = out.stdout.strip()
    qr = account.check_qr(uri)
    expect(qr.get("kind") == "login" and qr.get("address") == addr,
           f"check_qr did not read a login for {addr}: {qr!r}")
    account.add_transport_from_qr(uri)


def wait_incoming(account, predicate, what):
    """The next incoming message for which predicate(snapshot) holds."""
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        event = account.wait_for_event()
        if event.kind == EventType.INCOMING_MSG:
            snap = account.get_message_by_id(event.msg_id).get_snapshot()
            if predicate(snap):
                return snap
        elif event.kind == EventType.ERROR:
            print(f"  core error: {event.msg}", file=sys.stderr)
    fail(f"{what}: not received within {DEADLINE_S} s")


def wait_event(account, kind, what):
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        event = account.wait_for_event()
        if event.kind == kind:
            return event
    fail(f"{what}: no {kind} within {DEADLINE_S} s")


def main():
    with Rpc(accounts_dir=os.path.join(W, f"deltachat-{RUN}")) as rpc:
        dc = DeltaChat(rpc)
        alice, bob = dc.add_account(), dc.add_account()
        for account, (addr, password) in zip((alice, bob), ACCOUNTS):
            account.set_config("displayname", addr.split("@")[0])
            configure(account, addr, password)
            account.start_io()
        how = "from mailveil's dclogin: codes" if os.environ.get("DC_FROM_QR") else "by hand"
        print(f"both accounts configured through the relay ({how})")

        # Secure-Join: bob "scans" alice's QR code; the handshake's messages
        # go through both relay legs. Both sides must report it finished
        # (progress 1000), and alice must be a key contact for bob.
        bob.secure_join(alice.get_qr_code())
        for account, kind in ((bob, EventType.SECUREJOIN_JOINER_PROGRESS),
                              (alice, EventType.SECUREJOIN_INVITER_PROGRESS)):
            deadline = time.time() + DEADLINE_S
            done = False
            while not done and time.time() < deadline:
                event = account.wait_for_event()
                if event.kind == kind and event.progress == 1000:
                    done = True
                elif event.kind == EventType.ERROR:
                    print(f"  core error: {event.msg}", file=sys.stderr)
            expect(done, f"Secure-Join: no {kind} 1000 within {DEADLINE_S} s")
        contact = bob.get_contact_by_addr(ACCOUNTS[0][0]).get_snapshot()
        expect(contact.is_key_contact and contact.e2ee_avail,
               f"alice is not a key contact for bob after Secure-Join: {dict(contact)!r}")
        print("Secure-Join finished on both sides")

        # Keys first: Delta Chat does not send unencrypted to a new address.
        bob.create_chat(alice)
        chat = alice.create_chat(bob)
        text = f"hello through the relay {RUN}"
        chat.send_text(text)
        got = wait_incoming(bob, lambda s: s.text == text, "1:1 message")
        expect(got.show_padlock, "the 1:1 message arrived unencrypted")
        print("an encrypted 1:1 message arrived")

        reply_text = f"a quoted reply {RUN}"
        got.chat.send_message(text=reply_text, quoted_msg=got.id)
        reply = wait_incoming(alice, lambda s: s.text == reply_text, "quoted reply")
        expect(reply.quote and reply.quote.text == text, f"the quote was lost: {reply.quote!r}")
        print("a quoted reply arrived with its quote")

        alice.get_message_by_id(reply.id).send_reaction("\N{THUMBS UP SIGN}")
        wait_event(bob, EventType.INCOMING_REACTION, "reaction")
        mine = [m for m in got.chat.get_messages() if m.get_snapshot().text == reply_text]
        expect(len(mine) == 1, f"bob's reply found {len(mine)} times in his chat")
        reactions = mine[0].get_reactions()
        expect(reactions and "\N{THUMBS UP SIGN}" in str(reactions),
               f"reaction not recorded: {reactions!r}")
        print("a reaction arrived")

        blob = os.path.join(W, f"attachment-{RUN}.bin")
        with open(blob, "wb") as f:
            f.write(os.urandom(2 * 1024 * 1024))
        digest = hashlib.sha256(open(blob, "rb").read()).hexdigest()
        chat.send_message(text=f"attachment {RUN}", file=blob)

        # A large attachment may come as a small pre-message first, and the
        # whole file later: wait until some message with this text has it.
        size = 2 * 1024 * 1024
        deadline = time.time() + DEADLINE_S
        found = None
        while found is None and time.time() < deadline:
            for m in got.chat.get_messages():
                snap = m.get_snapshot()
                if (snap.text == f"attachment {RUN}" and snap.file and os.path.exists(snap.file)
                        and os.path.getsize(snap.file) == size):
                    found = snap
            if found is None:
                time.sleep(1)
        expect(found is not None, f"the whole attachment did not arrive within {DEADLINE_S} s")
        expect(hashlib.sha256(open(found.file, "rb").read()).hexdigest() == digest,
               "the attachment arrived changed")
        print("a 2 MB attachment arrived byte for byte")

        group = alice.create_group(f"relay group {RUN}")
        group.add_contact(bob)
        group_text = f"group hello {RUN}"
        group.send_text(group_text)
        in_group = wait_incoming(bob, lambda s: s.text == group_text, "group message")
        expect(in_group.chat_id != got.chat_id, "the group message landed in the 1:1 chat")
        print("a group message arrived in a group")

        # Let every loop settle, then count: each text exactly once.
        time.sleep(5)
        seen = {}
        for account in (alice, bob):
            for chat in account.get_chatlist():
                for m in chat.get_messages():
                    t = m.get_snapshot().text
                    if RUN in (t or ""):
                        key = (account.id, t)
                        seen[key] = seen.get(key, 0) + 1
        twice = {k: n for k, n in seen.items() if n > 1}
        expect(not twice, f"messages shown more than once: {twice}")
        print(f"no duplicates ({len(seen)} messages counted)")


if __name__ == "__main__":
    main()
