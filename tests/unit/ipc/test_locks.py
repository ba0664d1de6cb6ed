"""The runner's lock file: "is a runner alive?" is "is the lock held"."""

from __future__ import annotations

import fcntl
import os

from maqet_engine.ipc import locks


def test_liveness_is_the_lock(tmp_path):
    lock = tmp_path / "runner.lock"
    assert not locks.runner_alive(lock)
    fd = locks.acquire(lock, blocking=False)
    assert fd is not None
    try:
        assert locks.runner_alive(lock)
        assert locks.acquire(lock, blocking=False) is None
        assert not locks.remove_if_unlocked(lock)  # never robs a live runner
    finally:
        os.close(fd)
    assert not locks.runner_alive(lock)
    assert locks.remove_if_unlocked(lock) and not lock.exists()


def test_acquire_follows_a_concurrently_replaced_lock_file(tmp_path):
    lock = tmp_path / "runner.lock"
    fd = locks.acquire(lock, blocking=False)
    assert fd is not None
    os.close(fd)
    other = os.open(lock, os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_EX)
    os.unlink(lock)  # what remove_if_unlocked does while holding the lock
    try:
        fd = locks.acquire(lock, blocking=False)  # the new file, not the unlinked one
        assert fd is not None and os.fstat(fd).st_ino == os.stat(lock).st_ino
        os.close(fd)
    finally:
        os.close(other)
