"""Drives an interactive neomutt on a pseudo-terminal: it sends one message
through mailveil's SMTP listener and saves its Sent copy (Fcc) through
mailveil's IMAP listener, which batch mode (-n) cannot do.

    python3 neomutt_fcc.py <neomuttrc> <subject> <body-file> <recipient>

Presses `y` on the compose screen, answers nothing else, and fails if neomutt
has not exited within 60 seconds."""

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

rc, subject, body, rcpt = sys.argv[1:5]
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execvp("neomutt", ["neomutt", "-F", rc, "-s", subject, "-i", body, "--", rcpt])

fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
screen = b""
sent_key = False
deadline = time.time() + 60
status = None
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.2)
    if ready:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        screen += chunk
    if not sent_key and b"Security:" in screen:
        time.sleep(0.5)  # let the compose menu settle before the key
        os.write(fd, b"y")
        sent_key = True
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
else:
    os.kill(pid, 9)
    text = screen.decode("utf-8", "replace")[-2000:]
    print(f"neomutt did not finish; last screen output:\n{text}", file=sys.stderr)
    sys.exit(1)

if status is None or not os.WIFEXITED(status):
    _, status = os.waitpid(pid, 0)
code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
if not sent_key or code != 0:
    print(f"neomutt exited {code} (compose screen reached: {sent_key})", file=sys.stderr)
    sys.exit(1)
