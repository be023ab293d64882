"""Reads an strace log of mailveil (strace -f -y -e trace=%file,accept4,accept)
and fails if any file or directory was created, opened for writing, renamed,
removed, linked, truncated or had its mode/owner/times changed, outside the
allowed directories (the embedded Tor client's runtime directory).

    python3 file_writes.py TRACE [--allow DIR]... [--min-accepts N] [--min-allowed-writes N]

--min-accepts is the control: the trace must show at least N accepted client
connections, so that an empty result means "wrote nothing", not "traced
nothing". Prints what it counted and every offending line.

With --pid it also looks at the running process's open files: any regular
file held open for writing (beyond stdin/stdout/stderr, which the test
harness redirects) outside the allowed directories fails too; that catches a
file opened before tracing began and written to later."""

import argparse
import os
import re
import stat
import sys

ap = argparse.ArgumentParser()
ap.add_argument("trace")
ap.add_argument("--allow", action="append", default=[])
ap.add_argument("--min-accepts", type=int, default=1)
ap.add_argument("--min-allowed-writes", type=int, default=0,
                help="the control for a relay that accepts no TCP (onion only): at least N writes in the allowed directories")
ap.add_argument("--pid", type=int)
ap.add_argument("--cwd", default="/", help="the process's working directory, for relative paths")
args = ap.parse_args()

WRITE_FLAGS = re.compile(r"\bO_(WRONLY|RDWR|CREAT|TRUNC|APPEND)\b")
# Calls that change the file system whatever their flags.
MUTATING = {
    "creat", "mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
    "rmdir", "link", "linkat", "symlink", "symlinkat", "truncate", "chmod", "fchmodat",
    "fchmodat2", "chown", "lchown", "fchownat", "utime", "utimes", "utimensat", "futimesat",
    "mknod", "mknodat", "setxattr", "lsetxattr", "removexattr", "lremovexattr",
}
OPENS = {"open", "openat", "openat2"}
CALL = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(?:\d+:\d+:\d+\.\d+\s+)?([a-z0-9_]+)\((.*)$")
PATH = re.compile(r'(?:(?:-?\d+|AT_FDCWD)<([^>]*)>,\s*)?"((?:[^"\\]|\\.)*)"')

allowed = [os.path.realpath(a) for a in args.allow]
CWD = args.cwd
accepts = calls = allowed_writes = 0
offending = []
for line in open(args.trace, errors="replace"):
    m = CALL.match(line)
    if not m:
        continue
    name, rest = m.group(2), m.group(3)
    if name in ("accept", "accept4"):
        if not re.search(r"=\s*-1\b", rest) and "<unfinished" not in rest:
            accepts += 1
        continue
    calls += 1
    if name in OPENS:
        if not WRITE_FLAGS.search(rest):
            continue
    elif name not in MUTATING:
        continue
    # Each path with the directory fd before it, if any (strace -y prints
    # the fd's path in <...>).
    paths = PATH.findall(rest)
    # A call on a directory descriptor with no path of its own
    # (utimensat(fd<dir>, NULL, ...)): the descriptor's path.
    fd_only = re.match(r"\s*-?\d+<([^>]*)>,\s*NULL\b", rest)
    if not paths and fd_only:
        paths = [("", fd_only.group(1))]
    if not paths:
        offending.append(line.rstrip())
        continue
    for base, p in paths:
        full = os.path.normpath(p if p.startswith("/") else os.path.join(base or CWD, p))
        if not any(full == a or full.startswith(a + "/") for a in allowed):
            offending.append(line.rstrip())
            break
    else:
        allowed_writes += 1

held = 0
if args.pid:
    fd_dir = f"/proc/{args.pid}/fd"
    for fd in sorted(os.listdir(fd_dir), key=int):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
            # Regular files only (a deleted one still takes disk space);
            # sockets, pipes and /dev/null store nothing.
            regular = stat.S_ISREG(os.stat(f"{fd_dir}/{fd}").st_mode)
            flags = int(re.search(r"^flags:\s*([0-7]+)", open(f"/proc/{args.pid}/fdinfo/{fd}").read(), re.M).group(1), 8)
        except (OSError, AttributeError):
            continue
        if int(fd) <= 2 or not regular or flags & 3 == 0:
            continue
        held += 1
        if not any(target == a or target.startswith(a + "/") for a in allowed):
            offending.append(f"open for writing: fd {fd} -> {target}")

print(f"{args.trace}: {calls} file calls, {accepts} accepted connections, {allowed_writes} writes allowed, "
      f"{held} files held open for writing, {len(offending)} writes outside {allowed or 'nothing'}")
for o in offending[:20]:
    print("  " + o)
if accepts < args.min_accepts:
    print(f"control failed: expected at least {args.min_accepts} accepted connections in the trace")
    sys.exit(1)
if allowed_writes < args.min_allowed_writes:
    print(f"control failed: expected at least {args.min_allowed_writes} writes in the allowed directories")
    sys.exit(1)
sys.exit(1 if offending else 0)
