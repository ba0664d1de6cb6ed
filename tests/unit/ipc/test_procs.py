"""Process identity is a PID plus its start time, compared exactly."""

from __future__ import annotations

import os
import subprocess
import sys

from maqet_engine.ipc import procs


def test_a_live_process_is_itself():
    started = procs.own_start_time()
    assert procs.start_time(os.getpid()) == started
    assert procs.is_alive(os.getpid(), started)


def test_a_reused_pid_is_another_process():
    """Same PID, other start time: not the recorded process (PID reuse)."""
    assert not procs.is_alive(os.getpid(), procs.own_start_time() - 1)
    assert procs.open_pidfd(os.getpid(), procs.own_start_time() + 1) is None


def test_unknown_identity_is_never_alive():
    assert not procs.is_alive(os.getpid(), None)
    assert not procs.is_alive(None, 5)
    assert procs.start_time(None) is None and procs.start_time(-1) is None


def test_zombies_are_not_alive():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # a zombie now
    try:
        assert procs.start_time(pid) is None
    finally:
        os.waitpid(pid, 0)


def test_wait_pidfd_sees_the_exit():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        fd = procs.open_pidfd(child.pid, procs.start_time(child.pid))
        assert fd is not None
        assert not procs.wait_pidfd(os.dup(fd), 0.01)  # still running
        assert child.stdin is not None
        child.stdin.close()  # EOF: it exits
        assert procs.wait_pidfd(fd, 10.0)
    finally:
        child.kill()
        child.wait()
