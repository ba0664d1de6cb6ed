"""Is a VM's runner alive? The runner holds an exclusive ``flock`` on its lock file
for its whole life, so the answer is "is that lock taken" — never a PID guess (PIDs
are reused; zombies are not alive)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def runner_alive(lock_file: Path) -> bool:
    """True when some process holds the lock (a runner is alive)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we may have taken
    return False


def remove_if_unlocked(lock_file: Path) -> bool:
    """Delete a stale lock file, only while holding its lock (so a runner that just
    locked it is never robbed; runners re-check the inode after locking)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        st = os.fstat(fd)
        try:
            current = os.stat(lock_file)
        except FileNotFoundError:
            return False
        if (current.st_dev, current.st_ino) != (st.st_dev, st.st_ino):
            return False
        os.unlink(lock_file)
        return True
    finally:
        os.close(fd)


def acquire(lock_file: Path, *, blocking: bool) -> int | None:
    """Open and lock ``lock_file`` (creating it); the fd, or None when another holds it.

    Guards against a concurrent :func:`remove_if_unlocked`: after locking, the file at
    the path must still be the one locked, else lock the new one.
    """
    while True:  # at most a few rounds, each caused by a concurrent unlink
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        st = os.fstat(fd)
        try:
            current = os.stat(lock_file)
        except FileNotFoundError:
            os.close(fd)
            continue
        if (current.st_dev, current.st_ino) == (st.st_dev, st.st_ino):
            return fd
        os.close(fd)


def qemu_alive(pid: int | None, marker: str) -> bool:
    """``pid`` is a live (not zombie) process whose command line contains ``marker``
    (a VM's runtime directory: unique per VM id, so a reused PID does not match)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = fh.read().split(b"\0")
    except (OSError, IndexError):
        return False
    if state in (b"Z", b"X"):  # a zombie is not a running VM
        return False
    needle = os.fsencode(marker)
    return any(needle in arg for arg in args)


def open_pidfd(pid: int | None, marker: str) -> int | None:
    """A pidfd of the live process ``pid`` whose command line contains ``marker``, to
    wait for its exit later without a PID-reuse race (None when it is not there)."""
    if not pid:
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if qemu_alive(pid, marker):  # same checks: alive, not a zombie, the right program
        return fd
    os.close(fd)
    return None


def wait_pidfd(fd: int, timeout: float) -> bool:
    """Block until the process behind ``fd`` exited (True) or ``timeout`` passed; closes
    ``fd``."""
    import select

    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)
