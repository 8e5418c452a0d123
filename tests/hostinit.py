"""PID 1 of a test host (see tests/hosts.py): makes the host's private folders, then runs its
sshd and reaps every process orphaned to it, as a machine's init does. It runs inside fresh
mount, UTS and PID namespaces that `unshare` made; it never returns while sshd runs.

    hostinit.py --hostname NAME --home DIR --tmp DIR -- /usr/sbin/sshd -D ...
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

HOME = "/home/troupe"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--tmp", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()

    socket.sethostname(args.hostname)
    # /tmp last: the other sources may lie under this machine's /tmp.
    subprocess.run(["mount", "--bind", args.home, HOME], check=True)
    shm = ["mount", "-t", "tmpfs", "-o", "size=4g,mode=1777", "tmpfs", "/dev/shm"]
    subprocess.run(shm, check=True)
    subprocess.run(["mount", "--bind", args.tmp, "/tmp"], check=True)

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    daemon = subprocess.Popen(command)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == daemon.pid:
            print(f"{args.hostname}: sshd ended ({status})", file=sys.stderr, flush=True)
            return 1


if __name__ == "__main__":
    sys.exit(main())
