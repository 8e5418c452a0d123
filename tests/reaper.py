"""Run a command as a child subreaper, then end and reap whatever it left behind.

    python tests/reaper.py COMMAND [ARG ...]

The launcher's `ssh` starts a ControlMaster that outlives the `ray` command which started it
(ControlPersist). Orphaned, it would go to PID 1, which on these machines never reaps, and stay a
zombie once it exits. Here it is ours instead: when COMMAND exits (or we get SIGTERM, which
COMMAND gets too), every process left under us gets SIGTERM, then SIGKILL, and is reaped. Exits
with COMMAND's status.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _children() -> list[int]:
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(pid) for pid in (task / "children").read_text().split()]
    return found


def _reap_all(grace_s: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.05)


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    child = subprocess.Popen(argv)
    # SIGTERM (a tunnel closed by its process group) ends the wait below, not this process.
    signal.signal(signal.SIGTERM, lambda *_: None)
    status = None
    while status is None:
        try:
            status = child.wait()
        except InterruptedError:
            continue
        except KeyboardInterrupt:
            status = 130
    _reap_all()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
