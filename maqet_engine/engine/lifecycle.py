"""Run-state operations the engine's ``apply()`` and the CLI call: start (or re-adopt),
stop (the ladder), restart, pause, resume, status views, IPC through the runner.

Each ``ensure_*`` returns the human action strings of what it did (empty when
nothing was needed); ``check_mode=True`` computes the same actions with no side
effect. Policy lives here; the risky process/QMP code lives in the runner.

Concurrency: spawners of one VM serialise on ``start.lock`` (a blocking ``flock``
held only while a runner is being started), so N racing starts produce one runner
and N-1 "unchanged". Liveness is the runner's own lock (``runner.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from maqet_engine import constants as C
from maqet_engine.control.client import RunnerClient
from maqet_engine.errors import MaqetError, RunnerUnavailable, StateConflict
from maqet_engine.ipc import locks as liveness
from maqet_engine.paths import Paths, VMRuntimePaths
from maqet_engine.store import Store, VMRecord, VMStatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_RUNG_TEXT = {"powerdown": "ACPI powerdown", "quit": "QMP quit", "kill": "SIGKILL"}


# --- small helpers ----------------------------------------------------------------------
def _runtime(paths: Paths, record: VMRecord) -> VMRuntimePaths:
    return paths.vm_runtime(record.id)


def runner_alive(paths: Paths, record: VMRecord) -> bool:
    return liveness.runner_alive(_runtime(paths, record).lock_file)


def qemu_alive(paths: Paths, record: VMRecord) -> bool:
    """The QEMU recorded for ``record`` still runs (verified by its command line)."""
    return liveness.qemu_alive(record.qemu_pid, str(_runtime(paths, record).root))


@contextlib.contextmanager
def _start_lock(paths: Paths, record: VMRecord) -> Iterator[None]:
    runtime = paths.ensure_runtime(record.id)
    fd = os.open(runtime.root / C.START_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held by a spawner for at most RUNNER_READY_TIMEOUT_S
        yield
    finally:
        os.close(fd)


def _stop_call_timeout(timeout: float) -> float:
    return timeout + C.QUIT_TIMEOUT_S + C.KILL_TIMEOUT_S + C.IPC_TIMEOUT_S


def describe_stop(result: dict[str, Any], *, timeout: float, force: bool) -> str:
    """``stopped (ACPI powerdown, 0.04 s)`` and friends, from the runner's stop reply."""
    rung = result.get("rung")
    status = result.get("status", "stopped")
    if rung is None:
        return f"{status} ({result.get('reason', 'QEMU exited')})"
    text = f"{status} ({_RUNG_TEXT.get(rung, rung)}, {float(result.get('elapsed', 0)):.2f} s"
    if rung != "powerdown" and not force:
        text += f"; the guest did not power off within {timeout:g} s"
    return text + ")"


# --- stale state -----------------------------------------------------------------------
def cleanup_stale(paths: Paths, store: Store, name: str) -> list[str]:
    """With no runner alive: record a vanished VM as crashed and remove the socket and
    lock files a dead runner left. A QEMU that still lives keeps its QMP and serial
    sockets (a new runner re-adopts it). Returns what was done (for logs/tests)."""
    record = store.require_vm(name)
    runtime = _runtime(paths, record)
    if liveness.runner_alive(runtime.lock_file):
        return []
    done: list[str] = []
    alive = qemu_alive(paths, record)
    if record.status.is_active and not alive:
        reason = (f"runner and QEMU (pid {record.qemu_pid}) gone without recording an exit "
                  f"(was {record.status.value})")
        store.update_runtime(name, status=VMStatus.CRASHED, runner_pid=None, qemu_pid=None,
                             stopped_at=time.time(), last_exit=reason, event="crashed",
                             event_data={"reason": reason, "detected_by": "maqet"})
        done.append("recorded crashed")
    stale = [runtime.control_socket]
    if not alive:
        stale += [runtime.qmp_socket, runtime.serial_socket]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            done.append(f"removed {path.name}")
    if liveness.remove_if_unlocked(runtime.lock_file):
        done.append(f"removed {runtime.lock_file.name}")
    return done


# --- start / stop ----------------------------------------------------------------------------
def ensure_running(paths: Paths, store: Store, name: str, *, check_mode: bool = False,
                   ) -> list[str]:
    """Start the VM, or re-adopt its live QEMU when only the runner died."""
    record = store.require_vm(name)
    if runner_alive(paths, record):
        return []
    if check_mode:
        return ["adopted" if qemu_alive(paths, record) else "started"]
    with _start_lock(paths, record):
        record = store.require_vm(name)
        if runner_alive(paths, record):  # another process started it while we waited
            return []
        cleanup_stale(paths, store, name)
        from maqet_engine.control.spawn import qemu_launch_argv, spawn_runner

        # A live QEMU is re-adopted as it is; otherwise the runner launches the command
        # line built here (the runner never imports the spec package).
        argv = None if qemu_alive(paths, record) else qemu_launch_argv(record, paths)
        try:
            ready = spawn_runner(name, paths, qemu_argv=argv)
        except StateConflict:  # a runner started outside the start lock won the race
            return []
    return ["adopted" if ready.get("adopted") else "started"]


def ensure_stopped(paths: Paths, store: Store, name: str, *, timeout: float = C.STOP_TIMEOUT_S,
                   force: bool = False, check_mode: bool = False) -> list[str]:
    """Stop through the ladder; returns only after QEMU exited and the store says so."""
    record = store.require_vm(name)
    alive = runner_alive(paths, record)
    if not alive and not qemu_alive(paths, record):
        if not check_mode:
            cleanup_stale(paths, store, name)
        return []
    if check_mode:
        return ["stopped"]
    if not alive:  # QEMU lives without a runner: adopt it, then stop it politely
        ensure_running(paths, store, name)
        record = store.require_vm(name)
    # Taken before the stop, so the runner's exit can be awaited without a PID race.
    runner_fd = liveness.open_pidfd(record.runner_pid, C.RUNNER_MODULE)
    try:
        with RunnerClient(_runtime(paths, record).control_socket,
                          timeout=_stop_call_timeout(timeout)) as client:
            try:
                result = client.call("stop", timeout=timeout, force=force)
            except RunnerUnavailable:
                if runner_alive(paths, record):
                    raise
                cleanup_stale(paths, store, name)  # it exited on its own meanwhile
                return []
            client.wait_closed(C.RUNNER_EXIT_TIMEOUT_S)  # the runner let go of its lock
        if runner_fd is not None:  # a confirmed stop leaves no maqet process behind
            liveness.wait_pidfd(runner_fd, C.RUNNER_EXIT_TIMEOUT_S)
            runner_fd = None
    finally:
        if runner_fd is not None:
            os.close(runner_fd)
    return [describe_stop(result, timeout=timeout, force=force)]


def restart(paths: Paths, store: Store, name: str, *, timeout: float = C.STOP_TIMEOUT_S,
            force: bool = False, check_mode: bool = False) -> list[str]:
    actions = ensure_stopped(paths, store, name, timeout=timeout, force=force,
                             check_mode=check_mode)
    if check_mode:
        return [*actions, "started"]
    return actions + ensure_running(paths, store, name)


def _set_paused(paths: Paths, store: Store, name: str, *, paused: bool,
                check_mode: bool) -> list[str]:
    record = store.require_vm(name)
    if not runner_alive(paths, record) and not qemu_alive(paths, record):
        raise StateConflict(f"VM {name!r} is {record.status.value}",
                            hint="start it first with 'maqet start'")
    wanted = VMStatus.PAUSED if paused else VMStatus.RUNNING
    verb = "paused" if paused else "resumed"
    if check_mode:
        return [] if record.status == wanted else [verb]
    result = call(paths, store, name, "pause" if paused else "resume")
    return [verb] if result.get("changed") else []


def pause(paths: Paths, store: Store, name: str, *, check_mode: bool = False) -> list[str]:
    return _set_paused(paths, store, name, paused=True, check_mode=check_mode)


def resume(paths: Paths, store: Store, name: str, *, check_mode: bool = False) -> list[str]:
    return _set_paused(paths, store, name, paused=False, check_mode=check_mode)


# --- IPC and views ----------------------------------------------------------------------------
def call(paths: Paths, store: Store, name: str, method: str, *,
         ipc_timeout: float = C.IPC_TIMEOUT_S, **params: Any) -> Any:
    """One request to the VM's runner; re-adopts first when the runner died but QEMU
    lives. A VM that is not running is a StateConflict."""
    record = store.require_vm(name)
    if not runner_alive(paths, record):
        if not qemu_alive(paths, record):
            cleanup_stale(paths, store, name)
            record = store.require_vm(name)
            raise StateConflict(f"VM {name!r} is {record.status.value}",
                                hint=f"start it with 'maqet start {name}'")
        ensure_running(paths, store, name)
    with RunnerClient(_runtime(paths, record).control_socket, timeout=ipc_timeout) as client:
        return client.call(method, **params)


def runtime_view(paths: Paths, store: Store, record: VMRecord) -> dict[str, Any]:
    """The recorded state plus what is true now: runner alive, QEMU alive, the live
    QMP status and the accelerator QEMU really uses. A stale active row whose runner
    and QEMU are both gone is fixed up (crashed) on the way."""
    alive = runner_alive(paths, record)
    if not alive and record.status.is_active and not qemu_alive(paths, record):
        cleanup_stale(paths, store, record.name)
        record = store.require_vm(record.name)
    view: dict[str, Any] = {
        "status": record.status.value, "runner_alive": alive, "runner_pid": record.runner_pid,
        "qemu_pid": record.qemu_pid, "qemu_alive": qemu_alive(paths, record),
        "accel": record.accel, "last_exit": record.last_exit, "qmp_status": None,
        "started_at": record.started_at, "stopped_at": record.stopped_at,
    }
    if not alive:
        view["runner_pid"] = None
        return view
    try:
        live = RunnerClient(_runtime(paths, record).control_socket,
                            timeout=C.IPC_STATUS_TIMEOUT_S)
        with live:
            status = live.call("status")
    except (MaqetError, OSError) as err:  # a view must not fail on a runner going away
        view["runner_error"] = str(err)
        return view
    view.update(status=status["status"], qmp_status=status["qmp_status"],
                runner_pid=status["runner_pid"], qemu_pid=status["qemu_pid"],
                accel=status["accel"] or record.accel, adopted=status["adopted"])
    return view
