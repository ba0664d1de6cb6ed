"""Start/stop/restart/pause/resume against real QEMU and the tiny guest (TCG)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from guest import wait_marker

from maqet_engine.control.client import RunnerClient
from maqet_engine.engine import lifecycle
from maqet_engine.errors import QEMULaunchError, StateConflict
from maqet_engine.store import VMStatus

pytestmark = pytest.mark.qemu


def wait_pid_exit(pid: int, timeout: float = 10.0) -> None:
    """Block (pidfd, no polling) until ``pid`` is gone; reap it if it is our child."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"pid {pid} still alive after {timeout} s"
    finally:
        os.close(fd)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def test_start_stop_round_trip_is_graceful_and_idempotent(vms):
    name = vms.define()
    with vms.store() as store:
        assert lifecycle.ensure_running(vms.paths, store, name) == ["started"]
        assert lifecycle.ensure_running(vms.paths, store, name) == []  # unchanged
        view = lifecycle.runtime_view(vms.paths, store, store.require_vm(name))
        assert view["status"] == "running" and view["runner_alive"] and view["qemu_alive"]
        assert view["accel"] == "tcg" and view["qmp_status"] == "running"
        wait_marker(vms.paths, name)  # acpid is listening from here on

        actions = lifecycle.ensure_stopped(vms.paths, store, name, timeout=30)
        assert len(actions) == 1 and actions[0].startswith("stopped (ACPI powerdown, ")
        record = store.require_vm(name)
        assert record.status == VMStatus.STOPPED
        assert record.qemu_pid is None and "guest-shutdown" in (record.last_exit or "")
        kinds = [e.kind for e in store.events(name)]
        assert kinds[-3:] == ["POWERDOWN", "SHUTDOWN", "stopped"]
        # The guest powered itself off (SHUTDOWN from the guest, not from the host).
        shutdown = [e for e in store.events(name) if e.kind == "SHUTDOWN"][-1]
        assert shutdown.data == {"guest": True, "reason": "guest-shutdown"}
        assert not lifecycle.runner_alive(vms.paths, record)
        assert lifecycle.ensure_stopped(vms.paths, store, name, timeout=30) == []
        rt = vms.paths.vm_runtime(record.id)
        assert not rt.control_socket.exists() and not rt.qmp_socket.exists()


def test_check_mode_has_no_side_effect(vms):
    name = vms.define()
    with vms.store() as store:
        assert lifecycle.ensure_running(vms.paths, store, name, check_mode=True) == ["started"]
        assert store.require_vm(name).status == VMStatus.DEFINED
        assert not vms.our_pids()
        assert lifecycle.ensure_stopped(vms.paths, store, name, timeout=1, check_mode=True) == []


def test_pause_resume_restart(vms):
    name = vms.define()
    with vms.store() as store:
        lifecycle.ensure_running(vms.paths, store, name)
        assert lifecycle.pause(vms.paths, store, name) == ["paused"]
        assert store.require_vm(name).status == VMStatus.PAUSED
        assert lifecycle.pause(vms.paths, store, name) == []
        assert lifecycle.call(vms.paths, store, name, "status")["qmp_status"] == "paused"
        assert lifecycle.resume(vms.paths, store, name) == ["resumed"]
        assert store.require_vm(name).status == VMStatus.RUNNING
        first_qemu = store.require_vm(name).qemu_pid
        wait_marker(vms.paths, name)
        actions = lifecycle.restart(vms.paths, store, name, timeout=30)
        assert actions[0].startswith("stopped (ACPI powerdown") and actions[1] == "started"
        record = store.require_vm(name)
        assert record.status == VMStatus.RUNNING and record.qemu_pid != first_qemu
        # A paused guest cannot honour ACPI: stop goes straight to quit.
        lifecycle.pause(vms.paths, store, name)
        actions = lifecycle.ensure_stopped(vms.paths, store, name, timeout=30)
        assert actions[0].startswith("stopped (QMP quit")
    with vms.store() as store, pytest.raises(StateConflict):
        lifecycle.pause(vms.paths, store, name)


def test_stop_escalates_when_the_guest_ignores_acpi(vms):
    name = vms.define(with_guest=False)  # firmware only: nobody handles the power button
    with vms.store() as store:
        lifecycle.ensure_running(vms.paths, store, name)
        started = time.monotonic()
        actions = lifecycle.ensure_stopped(vms.paths, store, name, timeout=0.5)
        assert time.monotonic() - started < 0.5 + 5
        assert actions[0].startswith("stopped (QMP quit, ")
        assert "did not power off within 0.5 s" in actions[0]
        assert store.require_vm(name).status == VMStatus.STOPPED
        # --force skips the polite rung.
        lifecycle.ensure_running(vms.paths, store, name)
        actions = lifecycle.ensure_stopped(vms.paths, store, name, timeout=30, force=True)
        assert actions[0].startswith("stopped (QMP quit, ")
        assert "did not power off" not in actions[0]


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"arguments": ["-device", "no-such-device-maqet"]}, "no-such-device-maqet"),
    ({"memory": "64T"}, "memory"),
])
def test_launch_failure_is_reported_at_once_with_qemus_words(vms, overrides, expected):
    name = vms.define(with_guest=False, **overrides)
    with vms.store() as store:
        started = time.monotonic()
        with pytest.raises(QEMULaunchError) as info:
            lifecycle.ensure_running(vms.paths, store, name)
        assert time.monotonic() - started < 3.0  # QEMU itself fails in ~0.1 s
        assert expected in str(info.value)
        record = store.require_vm(name)
        assert record.status == VMStatus.DEFINED and not record.status.is_active
        assert expected in (record.last_exit or "")
        assert not lifecycle.runner_alive(vms.paths, record)


def test_qemu_killed_is_recorded_as_crashed(vms):
    name = vms.define()
    with vms.store() as store:
        lifecycle.ensure_running(vms.paths, store, name)
        record = store.require_vm(name)
        with RunnerClient(vms.paths.vm_runtime(record.id).control_socket) as client:
            os.kill(record.qemu_pid, signal.SIGKILL)
            assert client.wait_closed(10)  # the runner records the crash, then exits
        record = store.require_vm(name)
        assert record.status == VMStatus.CRASHED
        assert "SIGKILL" in (record.last_exit or "")
        assert store.events(name)[-1].kind == "crashed"
        assert not lifecycle.runner_alive(vms.paths, record)


def test_runner_killed_vm_survives_and_is_readopted(vms):
    name = vms.define()
    with vms.store() as store:
        lifecycle.ensure_running(vms.paths, store, name)
        offset = wait_marker(vms.paths, name)
        record = store.require_vm(name)
        os.kill(record.runner_pid, signal.SIGKILL)
        wait_pid_exit(record.runner_pid)
        view = lifecycle.runtime_view(vms.paths, store, store.require_vm(name))
        assert view["runner_alive"] is False and view["qemu_alive"] is True
        assert view["status"] == "running"

        # Any IPC request through the engine re-adopts first ...
        status = lifecycle.call(vms.paths, store, name, "status")
        assert status["adopted"] is True and status["qemu_pid"] == record.qemu_pid
        assert store.events(name)[-1].kind == "adopted"
        # ... and the guest still answers on its console.
        lifecycle.call(vms.paths, store, name, "serial_write", text="echo alive-$((6*7))\n")
        lifecycle.call(vms.paths, store, name, "serial_wait", pattern="alive-42", timeout=20)
        del offset
        # ensure_running on an adopted VM is unchanged; a new kill + start says "adopted".
        assert lifecycle.ensure_running(vms.paths, store, name) == []
        adopter = store.require_vm(name).runner_pid
        os.kill(adopter, signal.SIGKILL)
        wait_pid_exit(adopter)
        assert lifecycle.ensure_running(vms.paths, store, name) == ["adopted"]
        actions = lifecycle.ensure_stopped(vms.paths, store, name, timeout=30)
        assert actions[0].startswith("stopped (ACPI powerdown")
        assert store.require_vm(name).status == VMStatus.STOPPED


def test_stale_sockets_and_lock_of_a_dead_runner_are_cleaned(vms):
    name = vms.define()
    with vms.store() as store:
        lifecycle.ensure_running(vms.paths, store, name)
        record = store.require_vm(name)
        rt = vms.paths.vm_runtime(record.id)
        os.kill(record.runner_pid, signal.SIGKILL)
        os.kill(record.qemu_pid, signal.SIGKILL)
        wait_pid_exit(record.runner_pid)
        wait_pid_exit(record.qemu_pid)
        assert rt.control_socket.exists() and rt.lock_file.exists()
        view = lifecycle.runtime_view(vms.paths, store, store.require_vm(name))
        assert view["status"] == "crashed" and not view["runner_alive"]
        assert "gone without recording an exit" in view["last_exit"]
        for path in (rt.control_socket, rt.qmp_socket, rt.serial_socket, rt.lock_file):
            assert not path.exists(), path
        assert lifecycle.ensure_running(vms.paths, store, name) == ["started"]


CONCURRENT_START = """
import json, sys
from maqet_engine.engine import lifecycle
from maqet_engine.paths import resolve_paths
from maqet_engine.store import Store
paths = resolve_paths()
with Store.open(paths.db) as store:
    print(json.dumps(lifecycle.ensure_running(paths, store, sys.argv[1])))
"""


def test_ten_concurrent_starts_make_one_runner(vms):
    name = vms.define()
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_START, name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(10)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, [err for _, err in outputs]
    results = sorted(out.strip() for out, _ in outputs)
    assert results == ['["started"]'] + ["[]"] * 9
    runners = [pid for pid in vms.our_pids()
               if b"maqet_engine.runner" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(runners) == 1
