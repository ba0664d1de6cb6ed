"""Start/stop/restart/pause/resume against real QEMU and the tiny guest (TCG), through
the engine's facade as every front end calls it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from guest import wait_marker
from procs import wait_pid_exit

from maqet_engine import engine
from maqet_engine.control.client import RunnerClient
from maqet_engine.errors import QEMULaunchError, StateConflict
from maqet_engine.ipc import locks
from maqet_engine.store import Store, VMStatus

pytestmark = pytest.mark.qemu


def verbs(result: engine.Result) -> list[str]:
    return [a["action"] for a in result.actions]


def runner_alive(vms, record) -> bool:
    return locks.runner_alive(vms.paths.vm_runtime(record.id).lock_file)


def test_start_stop_round_trip_is_graceful_and_idempotent(vms):
    name = vms.define()
    ctx = vms.ctx()
    assert verbs(engine.start(ctx, name)) == ["start"]
    assert verbs(engine.start(ctx, name)) == []  # unchanged
    view = engine.status(ctx, name).data
    assert view["status"] == "running" and view["runner_alive"] and view["qemu_alive"]
    assert view["accel"] == "tcg" and view["qmp_status"] == "running"
    wait_marker(vms.paths, name)  # acpid is listening from here on

    result = engine.stop(ctx, name, timeout=30)
    (action,) = result.actions
    assert (action["action"], action["rung"], action["status"]) == ("stop", "powerdown",
                                                                    "stopped")
    assert result.describe()[0].startswith("stopped (ACPI powerdown, ")
    assert result.before["status"] == "running" and result.after["status"] == "stopped"
    with vms.store() as store:
        record = store.require_vm(name)
        assert record.status == VMStatus.STOPPED
        assert record.qemu_pid is None and "guest-shutdown" in (record.last_exit or "")
        kinds = [e.kind for e in store.events(name)]
        assert kinds[-3:] == ["POWERDOWN", "SHUTDOWN", "stopped"]
        # The guest powered itself off (SHUTDOWN from the guest, not from the host).
        shutdown = [e for e in store.events(name) if e.kind == "SHUTDOWN"][-1]
        assert shutdown.data == {"guest": True, "reason": "guest-shutdown"}
        assert not runner_alive(vms, record)
        assert engine.stop(ctx, name, timeout=30).changed is False
        rt = vms.paths.vm_runtime(record.id)
        assert not rt.control_socket.exists() and not rt.qmp_socket.exists()


def test_check_mode_has_no_side_effect(vms):
    name = vms.define()
    check = vms.ctx(check_mode=True)
    assert verbs(engine.start(check, name)) == ["start"]
    assert engine.start(check, name).after["status"] == "running"
    with vms.store() as store:
        assert store.require_vm(name).status == VMStatus.DEFINED
    assert not vms.our_pids()
    assert verbs(engine.stop(check, name, timeout=1)) == []
    assert verbs(engine.apply(check, name=name, state="paused")) == ["start", "pause"]


def test_pause_resume_restart(vms):
    name = vms.define()
    ctx = vms.ctx()
    engine.start(ctx, name)
    assert verbs(engine.pause(ctx, name)) == ["pause"]
    assert engine.status(ctx, name).data["status"] == "paused"
    assert verbs(engine.pause(ctx, name)) == []
    assert engine.status(ctx, name).data["qmp_status"] == "paused"
    assert verbs(engine.resume(ctx, name)) == ["resume"]
    with vms.store() as store:
        assert store.require_vm(name).status == VMStatus.RUNNING
        first_qemu = store.require_vm(name).qemu_pid
    wait_marker(vms.paths, name)
    result = engine.restart(ctx, name, timeout=30)
    assert verbs(result) == ["stop", "start"] and result.actions[0]["rung"] == "powerdown"
    with vms.store() as store:
        record = store.require_vm(name)
    assert record.status == VMStatus.RUNNING and record.qemu_pid != first_qemu
    # A paused guest cannot honour ACPI: stop goes straight to quit.
    engine.pause(ctx, name)
    assert engine.stop(ctx, name, timeout=30).actions[0]["rung"] == "quit"
    with pytest.raises(StateConflict):
        engine.pause(ctx, name)


def test_paused_is_a_desired_state_and_running_resumes(vms):
    name = vms.define()
    ctx = vms.ctx()
    first = engine.apply(ctx, name=name, state="paused")
    assert verbs(first) == ["start", "pause"] and first.after["status"] == "paused"
    assert engine.apply(ctx, name=name, state="paused").changed is False
    check = engine.apply(vms.ctx(check_mode=True), name=name, state="running")
    assert verbs(check) == ["resume"]
    resumed = engine.apply(ctx, name=name, state="running")
    assert verbs(resumed) == ["resume"]
    assert (resumed.before["status"], resumed.after["status"]) == ("paused", "running")
    assert engine.apply(ctx, name=name, state="running").changed is False
    engine.stop(ctx, name, force=True)


def test_stop_escalates_when_the_guest_ignores_acpi(vms):
    name = vms.define(with_guest=False)  # firmware only: nobody handles the power button
    ctx = vms.ctx()
    engine.start(ctx, name)
    started = time.monotonic()
    result = engine.stop(ctx, name, timeout=0.5)
    assert time.monotonic() - started < 0.5 + 5
    text = result.describe()[0]
    assert text.startswith("stopped (QMP quit, ") and "did not power off within 0.5 s" in text
    assert engine.status(ctx, name).data["status"] == "stopped"
    # force skips the polite rung.
    engine.start(ctx, name)
    result = engine.stop(ctx, name, timeout=30, force=True)
    assert result.actions[0]["rung"] == "quit" and "did not power off" not in result.describe()[0]


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"arguments": ["-device", "no-such-device-maqet"]}, "no-such-device-maqet"),
    ({"memory": "64T"}, "memory"),
])
def test_launch_failure_is_reported_at_once_with_qemus_words(vms, overrides, expected):
    name = vms.define(with_guest=False, **overrides)
    started = time.monotonic()
    with pytest.raises(QEMULaunchError) as info:
        engine.start(vms.ctx(), name)
    assert time.monotonic() - started < 3.0  # QEMU itself fails in ~0.1 s
    assert expected in str(info.value)
    with vms.store() as store:
        record = store.require_vm(name)
    assert record.status == VMStatus.DEFINED and not record.status.is_active
    assert expected in (record.last_exit or "")
    assert not runner_alive(vms, record)
    assert not vms.our_pids()  # the runner killed what it launched and exited


def test_qemu_killed_is_recorded_as_crashed(vms):
    name = vms.define()
    engine.start(vms.ctx(), name)
    with vms.store() as store:
        record = store.require_vm(name)
        with RunnerClient(vms.paths.vm_runtime(record.id).control_socket) as client:
            os.kill(record.qemu_pid, signal.SIGKILL)
            assert client.wait_closed(10)  # the runner records the crash, then exits
        record = store.require_vm(name)
        assert record.status == VMStatus.CRASHED
        assert "SIGKILL" in (record.last_exit or "")
        assert store.events(name)[-1].kind == "crashed"
        assert not runner_alive(vms, record)


def test_runner_killed_vm_survives_and_is_readopted(vms):
    name = vms.define()
    ctx = vms.ctx()
    engine.start(ctx, name)
    wait_marker(vms.paths, name)
    with vms.store() as store:
        record = store.require_vm(name)
    os.kill(record.runner_pid, signal.SIGKILL)
    assert wait_pid_exit(record.runner_pid)
    view = engine.status(ctx, name).data
    assert view["runner_alive"] is False and view["qemu_alive"] is True
    assert view["status"] == "running"
    # The same reading everywhere: the inventory's list and the view agree.
    assert engine.list_vms(ctx).data[0]["status"] == "running"

    # Any request through the engine re-adopts first ...
    assert engine.qmp(ctx, name, "query-status").data["status"] == "running"
    with vms.store() as store:
        assert store.events(name)[-1].kind == "adopted"
        assert store.require_vm(name).qemu_pid == record.qemu_pid
    status = engine.status(ctx, name).data
    assert status["adopted"] is True and status["qemu_pid"] == record.qemu_pid
    # ... and the guest still answers on its console.
    engine.write_console(ctx, name, "echo alive-$((6*7))\n")
    engine.wait_console(ctx, name, "alive-42", timeout=20)
    # start on an adopted VM is unchanged; a new kill + start says "adopt".
    assert verbs(engine.start(ctx, name)) == []
    with vms.store() as store:
        adopter = store.require_vm(name).runner_pid
    os.kill(adopter, signal.SIGKILL)
    assert wait_pid_exit(adopter)
    assert verbs(engine.start(ctx, name)) == ["adopt"]
    assert engine.stop(ctx, name, timeout=30).actions[0]["rung"] == "powerdown"
    assert engine.status(ctx, name).data["status"] == "stopped"


def test_stale_sockets_and_lock_of_a_dead_runner_are_cleaned(vms):
    name = vms.define()
    ctx = vms.ctx()
    engine.start(ctx, name)
    with vms.store() as store:
        record = store.require_vm(name)
    rt = vms.paths.vm_runtime(record.id)
    os.kill(record.runner_pid, signal.SIGKILL)
    os.kill(record.qemu_pid, signal.SIGKILL)
    assert wait_pid_exit(record.runner_pid) and wait_pid_exit(record.qemu_pid)
    assert rt.control_socket.exists() and rt.lock_file.exists()
    # Reading shows the crash and writes nothing ...
    view = engine.status(ctx, name).data
    assert view["status"] == "crashed" and not view["runner_alive"]
    assert "gone without recording an exit" in view["reason"]
    assert [vm["status"] for vm in engine.list_vms(ctx).data] == ["crashed"]
    with vms.store() as store:
        assert store.require_vm(name).status == VMStatus.RUNNING  # the record, untouched
    assert rt.control_socket.exists()
    # ... the next change records it and cleans up.
    assert verbs(engine.start(ctx, name)) == ["start"]
    with vms.store() as store:
        kinds = [e.kind for e in store.events(name)]
    assert "crashed" in kinds and kinds[-1] == "started"
    engine.stop(ctx, name, force=True)


def test_a_reused_pid_is_not_our_qemu(vms):
    """After runner and QEMU die, a process that got QEMU's PID is not taken for it:
    identity is PID plus start time, compared exactly (never a command line)."""
    name = vms.define()
    ctx = vms.ctx()
    engine.start(ctx, name)
    with vms.store() as store:
        record = store.require_vm(name)
    os.kill(record.runner_pid, signal.SIGKILL)
    assert wait_pid_exit(record.runner_pid)
    impostor = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                                 str(vms.paths.vm_runtime(record.id).root)],
                                stdin=subprocess.PIPE)
    try:
        os.kill(record.qemu_pid, signal.SIGKILL)
        assert wait_pid_exit(record.qemu_pid)
        with vms.store() as store:  # as if the impostor had been given QEMU's PID
            store.update_runtime(name, qemu_pid=impostor.pid)
        assert engine.status(ctx, name).data["status"] == "crashed"
        assert verbs(engine.start(ctx, name)) == ["start"]
        assert impostor.poll() is None  # never adopted, never signalled
        engine.stop(ctx, name, force=True)
        assert impostor.poll() is None
    finally:
        impostor.kill()
        impostor.wait()


CONCURRENT_START = """
import json, sys
from maqet_engine import engine
result = engine.start(engine.EngineContext.from_env(), sys.argv[1])
print(json.dumps([a["action"] for a in result.actions]))
"""


def test_ten_concurrent_starts_make_one_runner(vms):
    name = vms.define()
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_START, name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(10)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, [err for _, err in outputs]
    results = sorted(out.strip() for out, _ in outputs)
    assert results == ['["start"]'] + ["[]"] * 9
    runners = [pid for pid in vms.our_pids()
               if b"maqet_engine.runner" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(runners) == 1


def test_a_home_with_a_comma_a_space_and_non_ascii(tmp_path, guest_files, monkeypatch):
    """QEMU option values double their commas; the command line is built once, with
    the QMP socket's fd, so nothing is rewritten afterwards that such a home could break
    ('maqet show --argv' is what runs, QMP_FD aside)."""
    import guest
    from procs import kill_mentioning

    from maqet_engine.paths import resolve_paths

    home = tmp_path / "home, é"
    monkeypatch.setenv("MAQET_HOME", str(home))
    ctx = engine.EngineContext.from_env()
    paths = resolve_paths()
    try:
        spec = engine.load_definition(ctx, definition=guest.guest_definition("odd", guest_files))
        assert verbs(engine.apply(ctx, spec=spec, state="running")) == ["define", "start"]
        wait_marker(paths, "odd")
        with Store.open(paths.db) as store:
            record = store.require_vm("odd")
        running = Path(f"/proc/{record.qemu_pid}/cmdline").read_bytes().split(b"\0")[:-1]
        shown = engine.show(ctx, "odd").data["argv"]
        assert [a.replace("fd=QMP_FD", "fd=*") for a in shown] == [
            re.sub(r"fd=\d+,", "fd=*,", a) for a in (r.decode() for r in running)][:len(shown)]
        assert engine.stop(ctx, "odd", timeout=30).actions[0]["rung"] == "powerdown"
    finally:
        kill_mentioning(paths.runtime, paths.data)
