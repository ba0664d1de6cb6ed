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
