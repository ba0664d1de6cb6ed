"""Finding the processes a test caused, for teardown, and reading what a child prints
(importable by every test suite)."""

from __future__ import annotations

import os
import queue
import select
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KILL_TIMEOUT = 5.0  # a SIGKILLed process is gone in milliseconds


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


def kill_mentioning(*paths: Path) -> list[int]:
    """SIGKILL every process :func:`pids_mentioning` ``paths`` finds and wait until it is
    gone (a test's teardown); a process that ended meanwhile is fine. Returns the PIDs
    still alive after ``KILL_TIMEOUT``."""
    return kill_pids(pids_mentioning(*paths))


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def kill_pids(pids: Sequence[int], sig: int = signal.SIGKILL,
              timeout: float = KILL_TIMEOUT) -> list[int]:
    """Send ``sig`` to each PID (through a pidfd: no PID-reuse race) and wait, without
    polling, until they are gone. Returns the PIDs still alive after ``timeout``."""
    return wait_gone(pids, timeout, sig)


def wait_gone(pids: Sequence[int], timeout: float, sig: int | None = None) -> list[int]:
    """Wait (pidfds, no polling) until every PID has exited, sending ``sig`` first when
    given. Returns the PIDs still alive after ``timeout``."""
    fds = {}
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if sig is not None:
                signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            os.close(fd)
            continue
        fds[fd] = pid
    deadline = time.monotonic() + timeout
    try:
        while fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select(list(fds), [], [], remaining)
            for fd in ready:
                os.close(fd)
                del fds[fd]
    finally:
        survivors = [pid for fd, pid in fds.items() if alive(pid)]
        for fd in fds:
            os.close(fd)
    return survivors


class Lines:
    """The lines of a child's text stream, read by a thread of their own until its end.
    (select() on a buffered text stream misses lines already in its buffer; and a
    stream nobody drains would stop a chatty child once the pipe is full.)"""

    def __init__(self, stream: Any) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        try:
            for line in stream:
                self._lines.put(line)
        except (OSError, ValueError):  # closed at the end of the test
            pass
        finally:
            self._lines.put(None)

    def next(self, timeout: float) -> str | None:
        """The next line; None at the end of the stream or after ``timeout`` seconds."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
