"""Argument parsing of the runtime commands and lock-based liveness (no QEMU)."""

from __future__ import annotations

import fcntl
import os

import pytest

from maqet_engine.cli.runtime_cmds import parse_qmp_arguments
from maqet_engine.engine.logs import tail_bytes
from maqet_engine.errors import UsageError
from maqet_engine.ipc import locks as liveness


def test_qmp_arguments():
    assert parse_qmp_arguments(None, []) == {}
    assert parse_qmp_arguments('{"a": 1}', ["b=2", "c=text", "d=true", "e={\"x\":1}"]) == {
        "a": 1, "b": 2, "c": "text", "d": True, "e": {"x": 1}}
    for bad_json, pairs in (("[1]", []), ("{", []), (None, ["novalue"]), (None, ["=1"])):
        with pytest.raises(UsageError):
            parse_qmp_arguments(bad_json, pairs)


def test_liveness_is_the_lock(tmp_path):
    lock = tmp_path / "runner.lock"
    assert not liveness.runner_alive(lock)
    fd = liveness.acquire(lock, blocking=False)
    assert fd is not None
    try:
        assert liveness.runner_alive(lock)
        assert liveness.acquire(lock, blocking=False) is None
        assert not liveness.remove_if_unlocked(lock)  # never robs a live runner
    finally:
        os.close(fd)
    assert not liveness.runner_alive(lock)
    assert liveness.remove_if_unlocked(lock) and not lock.exists()


def test_acquire_follows_a_concurrently_replaced_lock_file(tmp_path):
    lock = tmp_path / "runner.lock"
    fd = liveness.acquire(lock, blocking=False)
    assert fd is not None
    os.close(fd)
    other = os.open(lock, os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_EX)
    os.unlink(lock)  # what remove_if_unlocked does while holding the lock
    try:
        fd = liveness.acquire(lock, blocking=False)  # the new file, not the unlinked one
        assert fd is not None and os.fstat(fd).st_ino == os.stat(lock).st_ino
        os.close(fd)
    finally:
        os.close(other)


def test_zombies_and_strangers_are_not_our_qemu(tmp_path):
    assert not liveness.qemu_alive(None, "x")
    assert not liveness.qemu_alive(os.getpid(), "/definitely/not/in/my/cmdline")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # a zombie now
    try:
        assert not liveness.qemu_alive(pid, "")
    finally:
        os.waitpid(pid, 0)


def test_tail_bytes(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"a\nb\nc\n")
    assert tail_bytes(log, None) == (b"a\nb\nc\n", 6)
    assert tail_bytes(log, 2) == (b"b\nc\n", 6)
    assert tail_bytes(log, 0) == (b"", 6)
