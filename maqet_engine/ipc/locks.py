"""Is a VM's runner alive? The runner holds an exclusive ``flock`` on its lock file
for its whole life, so the answer is "is that lock taken" — never a PID guess (PIDs
are reused; zombies are not alive). Which process QEMU is: :mod:`.procs`."""

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
