"""Finding the processes a test caused, for teardown (importable by every test suite)."""

from __future__ import annotations

import os
from pathlib import Path


def pids_mentioning(*paths: Path) -> list[int]:
    """PIDs of processes (other than this one) whose command line contains any of
    ``paths``: runners and QEMUs of a test's MAQET_HOME name its directories."""
    needles = {os.fsencode(str(p)) for p in paths}
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            pids.append(int(entry))
    return pids


def wait_pid_exit(pid: int, timeout: float = 10.0) -> bool:
    """Block (a pidfd, no polling) until ``pid`` is gone; reap it if it is our child.
    True when it exited within ``timeout``."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        gone = bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)
    if gone:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    return gone
