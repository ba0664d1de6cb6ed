"""Process identity: a PID plus the time the process started.

PIDs are reused; a PID together with its start time (``/proc/PID/stat`` field 22, in
clock ticks since boot) names one process for the life of the machine. The runner
records both for QEMU and for itself; every later "is it still that process?" compares
them exactly. Nothing here matches command lines.

A pidfd (``os.pidfd_open``) pins a process once opened: checking the start time
*after* opening it proves the fd refers to the recorded process, and waiting on it
later cannot be fooled by a reused PID.
"""

from __future__ import annotations

import os
import select

# Fields of /proc/PID/stat after the ")" that ends the command name: state is the
# first, starttime (field 22 of the whole line) the 20th.
_STATE = 0
_USER_TIME = 11  # utime, field 14: clock ticks in user mode
_SYSTEM_TIME = 12  # stime, field 15
_START_TIME = 19
_RSS = 21  # field 24: resident pages
_DEAD_STATES = (b"Z", b"X")  # a zombie or a dying process is not a running VM


def _live_fields(pid: int | None) -> list[bytes] | None:
    """The fields of live process ``pid``'s ``/proc/PID/stat`` after its command name;
    None when it is gone, a zombie, or unreadable."""
    if not pid or pid < 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if not fields or fields[_STATE] in _DEAD_STATES else fields


def start_time(pid: int | None) -> int | None:
    """The start time of live process ``pid`` (None when it is gone or a zombie)."""
    fields = _live_fields(pid)
    try:
        return None if fields is None else int(fields[_START_TIME])
    except (IndexError, ValueError):
        return None


def usage(pid: int | None, started: int | None) -> tuple[float, int] | None:
    """(CPU seconds used, resident bytes) of the live process (``pid``, ``started``),
    from one read of its ``/proc/PID/stat``; None when it is gone or another process."""
    fields = _live_fields(pid) if started is not None else None
    try:
        if fields is None or int(fields[_START_TIME]) != started:
            return None
        ticks = int(fields[_USER_TIME]) + int(fields[_SYSTEM_TIME])
        return ticks / os.sysconf("SC_CLK_TCK"), int(fields[_RSS]) * os.sysconf("SC_PAGE_SIZE")
    except (IndexError, ValueError):
        return None


def own_start_time() -> int:
    """This process's start time (it is alive, so never None)."""
    found = start_time(os.getpid())
    assert found is not None
    return found


def is_alive(pid: int | None, started: int | None) -> bool:
    """``pid`` is still the live process that started at ``started``."""
    return started is not None and start_time(pid) == started


def open_pidfd(pid: int | None, started: int | None) -> int | None:
    """A pidfd of the live process (``pid``, ``started``), or None when it is gone.
    The caller closes it (or hands it to :func:`wait_pidfd`)."""
    if not pid or started is None:
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if start_time(pid) == started:  # checked after opening: fd is that very process
        return fd
    os.close(fd)
    return None


def wait_pidfd(fd: int, timeout: float) -> bool:
    """Block until the process behind ``fd`` exited (True) or ``timeout`` passed; closes
    ``fd``."""
    try:
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        return bool(ready)
    finally:
        os.close(fd)
