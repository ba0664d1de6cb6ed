"""Run-state policy: start (or re-adopt), stop (the ladder), restart, pause, resume,
and requests through the runner. The engine's facade calls these; front ends never do.

Each ``ensure_*`` returns the actions it took (empty when nothing was needed);
``check_mode=True`` computes the same actions with no side effect. Whether a VM runs
is read through :mod:`.runstate` (one reading for every caller). The risky process
and QMP code lives in the runner; this module decides.

Concurrency: spawners of one VM serialise on ``start.lock`` (a blocking ``flock``
held only while a runner is being started), so N racing starts produce one runner
and N-1 "unchanged". Liveness is the runner's own lock (``runner.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine import log, ops
from maqet_engine.engine import runstate
from maqet_engine.engine.result import Action
from maqet_engine.errors import (
    MaqetError,
    OperationTimeout,
    RunnerUnavailable,
    StateConflict,
    StateStoreError,
    host_error,
)
from maqet_engine.ipc import locks, procs, watch
from maqet_engine.paths import Paths, VMRuntimePaths
from maqet_engine.store import Store, VMRecord, VMStatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from maqet_engine.engine.context import EngineContext

_log = log.get_logger(__name__)


def _decided(paths: Paths, name: str, *, wanted: str, found: str, action: str) -> None:
    log.decision(_log, paths.vm_data(name).runner_log, name, wanted=wanted, found=found,
                 action=action)


def _ensure_runtime(paths: Paths, record: VMRecord) -> VMRuntimePaths:
    """The VM's runtime directory, created; a full or read-only one is a HostError."""
    try:
        return paths.ensure_runtime(record.id)
    except OSError as err:
        raise host_error(err, "create the runtime directory", paths.vm_runtime(record.id).root) \
            from err


@contextlib.contextmanager
def _start_lock(paths: Paths, record: VMRecord) -> Iterator[None]:
    runtime = _ensure_runtime(paths, record)
    try:
        fd = os.open(runtime.start_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise host_error(err, "create the start lock", runtime.start_lock) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held by a spawner for at most RUNNER_READY_TIMEOUT_S
        yield
    finally:
        os.close(fd)


def _stop_call_timeout(timeout: float) -> float:
    return (timeout + 2 * C.QMP_LADDER_CALL_TIMEOUT_S + C.QUIT_TIMEOUT_S + C.KILL_TIMEOUT_S
            + C.IPC_TIMEOUT_S)


# --- stale state -----------------------------------------------------------------------
def cleanup_stale(paths: Paths, store: Store, name: str) -> VMRecord:
    """Before a change, with no runner alive: record a vanished VM as crashed and
    remove the socket and lock files a dead runner left. A QEMU that still lives keeps
    its QMP and serial sockets (a new runner re-adopts it). Returns the fresh record."""
    record = store.require_vm(name)
    view = runstate.probe(paths, record)
    if view.runner_alive:
        return record
    runtime = paths.vm_runtime(record.id)
    if runstate.needs_record(view):
        _decided(paths, name, wanted="a change", found=str(view.reason), action="record crashed")
        store.update_runtime(name, status=VMStatus.CRASHED, runner_pid=None, qemu_pid=None,
                             runner_start=None, qemu_start=None, ports_json=None,
                             stopped_at=time.time(),
                             last_exit=view.reason, event="crashed",
                             event_data={"reason": view.reason, "detected_by": "maqet"})
        record = store.require_vm(name)
    stale = [runtime.control_socket]
    if not view.qemu_alive:
        stale += [runtime.qmp_socket, runtime.serial_socket, runtime.agent_socket]
        from maqet_engine.engine.networks import cleanup_taps

        for tap in cleanup_taps(paths, record):  # only a persistent one outlives QEMU
            _decided(paths, name, wanted="a change", found=f"leftover tap device {tap}",
                     action="delete it")
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    locks.remove_if_unlocked(runtime.lock_file)
    return record


# --- start / stop ----------------------------------------------------------------------------
def ensure_running(paths: Paths, store: Store, name: str, *, check_mode: bool = False,
                   ) -> list[Action]:
    """Start the VM, or re-adopt its live QEMU when only the runner died. A paused VM
    stays paused (see :func:`set_paused`)."""
    record = store.require_vm(name)
    view = runstate.probe(paths, record)
    if view.runner_alive and view.status in (VMStatus.RUNNING, VMStatus.PAUSED):
        return []
    verb = "adopt" if view.qemu_alive else "start"
    if check_mode:
        return [] if view.runner_alive else [{"action": verb}]
    # Also when a runner holds its lock but is not ready yet: the start lock is held by
    # its spawner until the runner reported, so waiting for it waits for that start.
    with _start_lock(paths, record):
        record = store.require_vm(name)
        if runstate.probe(paths, record).runner_alive:  # started while we waited
            return []
        record = cleanup_stale(paths, store, name)
        from maqet_engine.control.spawn import spawn_runner
        from maqet_engine.engine import networks

        # A live QEMU is re-adopted as it is; otherwise the runner launches the command
        # line built here around the QMP socket the spawner binds, with the host side of
        # its named networks (tap devices opened here are passed on, and our copies
        # closed when the runner has its own).
        live = runstate.qemu_alive(record)
        log_format = log.log_format()  # checked before anything starts
        _decided(paths, name, wanted="running", found=view.status.value, action=verb)
        host = contextlib.nullcontext(None) if live else networks.prepare(paths, store, record)
        with host as side:
            launch = None if side is None else _launcher(paths, record, side)
            try:
                ready = spawn_runner(name, paths, _ensure_runtime(paths, record),
                                     qemu_argv=launch, agent=bool(record.spec_data.get("agent")),
                                     op_id=ops.current_op(), log_format=log_format)
            except StateConflict:  # a runner started outside the start lock won the race
                return []
    return [{"action": "adopt" if ready.get("adopted") else "start"}]


def _launcher(paths: Paths, record: VMRecord, side: Any) -> Any:
    """The spawner's callback: the launch data around the fds of the sockets it bound
    (QMP's, and the guest agent's for ``agent: true``)."""
    from maqet_engine.engine.command_line import command_line

    def launch(fds: dict[str, int]) -> dict[str, Any]:
        argv = command_line(record, paths, qmp_fd=fds["qmp"],
                            agent_fd=fds.get("agent", C.AGENT_FD_PLACEHOLDER),
                            backends=side.backends)
        return {"qemu_argv": argv, **side.launch_data()}

    return launch


def ensure_stopped(paths: Paths, store: Store, name: str, *, timeout: float = C.STOP_TIMEOUT_S,
                   force: bool = False, check_mode: bool = False) -> list[Action]:
    """Stop through the ladder; returns only after QEMU exited and the store says so.

    A runner that holds its lock but does not answer (SIGSTOPped, wedged) is reported
    within ``RUNNER_PING_TIMEOUT_S``; with ``force`` maqet then kills it and its QEMU
    itself, by their recorded identities (pidfds), and records the stop. A stop whose
    end the runner could not record (full or read-only disk) is recorded here, or
    raised as a StateStoreError that says the VM did stop."""
    record = store.require_vm(name)
    view = runstate.probe(paths, record)
    if not view.runner_alive and not view.qemu_alive:
        if not check_mode:
            cleanup_stale(paths, store, name)
        return []
    action: Action = {"action": "stop", "force": force, "timeout": timeout}
    if check_mode:
        return [action]
    if not view.runner_alive:  # QEMU lives without a runner: adopt it, then stop it
        try:
            ensure_running(paths, store, name)
        except MaqetError as err:
            if not force:
                raise
            return [_kill_unsupervised(paths, store, name, action,
                                       f"no runner could adopt it: {err.message}")]
        record = store.require_vm(name)
    _decided(paths, name, wanted="stopped", found=view.status.value,
             action="stop without waiting for the guest" if force else
             f"stop (the guest gets {timeout:g} s)")
    # Taken before the stop, so the runner's exit can be awaited without a PID race.
    runner_fd = procs.open_pidfd(record.runner_pid, record.runner_start)
    try:
        from maqet_engine.control.client import RunnerClient

        socket_path = control_socket(paths, record)
        try:
            client = RunnerClient(socket_path, timeout=C.RUNNER_PING_TIMEOUT_S)
        except RunnerUnavailable as err:
            if runstate.probe(paths, store.require_vm(name)).runner_alive:
                if force and "timed out" in str(err):  # listening, never accepting
                    return [_kill_unsupervised(paths, store, name, action,
                                               _unanswered(record))]
                raise
            cleanup_stale(paths, store, name)  # it exited on its own meanwhile
            return []
        with client:
            try:
                client.call("ping", ipc_timeout=C.RUNNER_PING_TIMEOUT_S)
                reply = client.call("stop", timeout=timeout, force=force,
                                    ipc_timeout=_stop_call_timeout(timeout))
            except OperationTimeout:
                if not force:
                    raise OperationTimeout(
                        f"{_unanswered(record)} (stopped or hung)",
                        hint="stop the VM with --force: maqet then kills QEMU and that "
                        "runner itself") from None
                return [_kill_unsupervised(paths, store, name, action, _unanswered(record))]
            except RunnerUnavailable:
                if runstate.probe(paths, store.require_vm(name)).runner_alive:
                    raise
                cleanup_stale(paths, store, name)  # it exited on its own meanwhile
                return []
            client.wait_closed(C.RUNNER_EXIT_TIMEOUT_S)  # the runner let go of its lock
        if runner_fd is not None:  # a confirmed stop leaves no maqet process behind
            procs.wait_pidfd(runner_fd, C.RUNNER_EXIT_TIMEOUT_S)
            runner_fd = None
    finally:
        if runner_fd is not None:
            os.close(runner_fd)
    action.update(rung=reply.get("rung"), seconds=float(reply.get("elapsed") or 0.0),
                  status=reply.get("status", "stopped"), reason=reply.get("reason"))
    if reply.get("recorded") is False:  # the runner's store write failed: try it here
        _record_end(store, name, action, detail={"recorded_by": "maqet",
                                                  "code": reply.get("code"),
                                                  "signal": reply.get("signal")})
    return [action]


def _unanswered(record: VMRecord) -> str:
    return (f"the runner of {record.name!r} (pid {record.runner_pid}) did not answer "
            f"within {C.RUNNER_PING_TIMEOUT_S:g} s")


def _kill_unsupervised(paths: Paths, store: Store, name: str, action: Action,
                       why: str) -> Action:
    """A forced stop when no runner can do it: SIGKILL the runner (first, so it cannot
    record anything after us) and QEMU, each through a pidfd of its recorded identity
    (PID + start time: a reused PID is never signalled), wait for both, record the
    stop, remove what they left."""
    started = time.monotonic()
    record = store.require_vm(name)
    targets = [("runner", record.runner_pid, procs.open_pidfd(record.runner_pid,
                                                              record.runner_start)),
               ("QEMU", record.qemu_pid, procs.open_pidfd(record.qemu_pid,
                                                          record.qemu_start))]
    killed = []
    for what, pid, fd in targets:
        if fd is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        if not procs.wait_pidfd(fd, C.KILL_TIMEOUT_S):
            raise OperationTimeout(f"{what} of {name!r} (pid {pid}) did not exit even after "
                                   "SIGKILL", hint=f"it may be stuck in the kernel (D state); "
                                   f"see /proc/{pid}/stack")
        killed.append(f"{what} pid {pid}")
    if runstate.probe(paths, store.require_vm(name)).runner_alive:
        raise RunnerUnavailable(f"{why}, and it cannot be identified to be killed",
                                hint="find the process holding "
                                f"{paths.vm_runtime(record.id).lock_file} and kill it")
    reason = f"killed by maqet stop --force ({', '.join(killed) or 'nothing left'}): {why}"
    _log.warning("%s: %s", name, reason)
    if killed:  # the ladder's last rung, taken here instead of by the runner
        with contextlib.suppress(StateStoreError):  # the stop's own record follows
            store.add_event(name, "stop_rung", {"rung": "kill", "by": "maqet",
                                                "killed": killed})
    action.update(rung="kill", seconds=round(time.monotonic() - started, 3), status="stopped",
                  reason=reason)
    _record_end(store, name, action, detail={"recorded_by": "maqet", "unsupervised": True})
    cleanup_stale(paths, store, name)  # the sockets and lock file they left
    return action


def _record_end(store: Store, name: str, action: Action, *, detail: dict[str, Any]) -> None:
    """Record the end of a stop that its runner did not (or could not) record.

    :raise StateStoreError: the store cannot be written either; the message says that
        the VM did stop, and what shows until space returns.
    """
    status = VMStatus(action.get("status") or "stopped")
    reason = action.get("reason")
    try:
        store.update_runtime(name, status=status, runner_pid=None, runner_start=None,
                             qemu_pid=None, qemu_start=None, ports_json=None,
                             stopped_at=time.time(),
                             last_exit=reason, event=status.value,
                             event_data={"rung": action.get("rung"), "reason": reason,
                                         **detail})
    except StateStoreError as err:
        raise StateStoreError(
            f"VM {name!r} did stop ({reason}), but the state store cannot record it: "
            f"{err.message}",
            hint="free space on (or remount read-write) the filesystem of the state store; "
            "until then maqet shows the VM as crashed",
        ) from err


def restart(paths: Paths, store: Store, name: str, *, timeout: float = C.STOP_TIMEOUT_S,
            force: bool = False, check_mode: bool = False) -> list[Action]:
    actions = ensure_stopped(paths, store, name, timeout=timeout, force=force,
                             check_mode=check_mode)
    if check_mode:
        return [*actions, {"action": "start"}]
    return actions + ensure_running(paths, store, name)


def set_paused(paths: Paths, store: Store, name: str, *, paused: bool,
               check_mode: bool = False) -> list[Action]:
    """Pause or resume the vCPUs of a running VM."""
    record = store.require_vm(name)
    view = runstate.probe(paths, record)
    if not view.runner_alive and not view.qemu_alive:
        raise StateConflict(f"VM {name!r} is {view.status.value}", hint="start it first")
    wanted = VMStatus.PAUSED if paused else VMStatus.RUNNING
    verb = "pause" if paused else "resume"
    if view.status == wanted:  # the runner keeps the record current
        return []
    if check_mode:
        return [{"action": verb}]
    _decided(paths, name, wanted=wanted.value, found=view.status.value, action=verb)
    reply = call(paths, store, name, verb)
    return [{"action": verb}] if reply.get("changed") else []


# --- IPC and views ----------------------------------------------------------------------------
def control_socket(paths: Paths, record: VMRecord) -> Path:
    """The runner's control socket, summoned back when it vanished under a live runner
    (a tmp cleaner or logind removed the runtime directory): the directory is made
    again (private), and the runner, identified by pid and start time, is asked by
    signal to re-create its socket; this waits (inotify, bounded) until it listens.
    Nothing is killed: the runner still holds QEMU's QMP connection."""
    runtime = paths.vm_runtime(record.id)
    if runtime.control_socket.exists():
        return runtime.control_socket
    pidfd = procs.open_pidfd(record.runner_pid, record.runner_start)
    if pidfd is None:  # no runner of ours: connecting says so
        return runtime.control_socket
    try:
        if not locks.runner_alive(runtime.lock_file):
            return runtime.control_socket
        paths.ensure_runtime(record.id)
        with watch.DirectoryWatch(runtime.root) as changes:
            if runtime.control_socket.exists():  # re-created before the watch began
                return runtime.control_socket
            _log.info("%s: control socket gone, asking runner %d to re-create it",
                      record.name, record.runner_pid)
            signal.pidfd_send_signal(pidfd, getattr(signal, C.RECREATE_SOCKET_SIGNAL))
            # The runner binds, listens, then chmods: the chmod says it is listening.
            changes.wait_for(C.CONTROL_SOCKET, timeout=C.IPC_STATUS_TIMEOUT_S)
    except ProcessLookupError:
        pass  # it exited meanwhile: connecting says so
    finally:
        os.close(pidfd)
    return runtime.control_socket


def serving(paths: Paths, store: Store, name: str) -> Path:
    """The control socket of the VM's runner, re-adopting first when the runner died but
    QEMU lives. A VM that is not running is a StateConflict."""
    record = store.require_vm(name)
    view = runstate.probe(paths, record)
    if not view.runner_alive:
        if not view.qemu_alive:
            raise StateConflict(f"VM {name!r} is {view.status.value}", hint="start it first")
        ensure_running(paths, store, name)
        record = store.require_vm(name)
    return control_socket(paths, record)


def call(paths: Paths, store: Store, name: str, method: str, *,
         ipc_timeout: float = C.IPC_TIMEOUT_S, **params: Any) -> Any:
    """One request to the VM's runner; re-adopts first when the runner died but QEMU
    lives. A VM that is not running is a StateConflict."""
    from maqet_engine.control.client import RunnerClient

    with RunnerClient(serving(paths, store, name), timeout=ipc_timeout) as client:
        return client.call(method, **params)


def call_vm(ctx: EngineContext, name: str, method: str, *,
            ipc_timeout: float = C.IPC_TIMEOUT_S, **params: Any) -> Any:
    """:func:`call` for a facade call: the store of ``ctx`` opened for the request."""
    with ctx.open_store(create=False) as store:
        return call(ctx.paths, store, name, method, ipc_timeout=ipc_timeout, **params)


def stream_vm(ctx: EngineContext, name: str, method: str, **params: Any) -> Any:
    """:func:`open_stream` for a facade call, as :func:`call_vm`."""
    with ctx.open_store(create=False) as store:
        return open_stream(ctx.paths, store, name, method, **params)


def require_vm(ctx: EngineContext, name: str) -> None:
    """A VMNotFound when ``ctx``'s store has no VM ``name``."""
    with ctx.open_store(create=False) as store:
        store.require_vm(name)


def open_stream(paths: Paths, store: Store, name: str, method: str, **params: Any) -> Any:
    """A stream request to the VM's runner (a ``control.client.StreamCall``), as
    :func:`call` finds the runner."""
    from maqet_engine.control.client import stream

    return stream(serving(paths, store, name), method, **params)


def live_status(paths: Paths, record: VMRecord) -> dict[str, Any]:
    """The run view plus what the runner reports now (QMP status, accelerator). Never
    writes: a runner that does not answer in time is reported, not repaired."""
    view = runstate.probe(paths, record)
    data: dict[str, Any] = view.to_dict()
    data.update(accel=record.accel if view.active else None, qmp_status=None,
                last_exit=record.last_exit, started_at=record.started_at,
                stopped_at=record.stopped_at)
    if not view.runner_alive:
        return data
    from maqet_engine.control.client import RunnerClient

    try:
        with RunnerClient(control_socket(paths, record),
                          timeout=C.IPC_STATUS_TIMEOUT_S) as client:
            live = client.call("status")
    except (MaqetError, OSError) as err:  # a view must not fail on a runner going away
        data["runner_error"] = str(err)
        return data
    data.update(status=live["status"], qmp_status=live["qmp_status"],
                runner_pid=live["runner_pid"], qemu_pid=live["qemu_pid"],
                accel=live["accel"] or record.accel, adopted=live["adopted"],
                agent=live.get("agent"))
    return data
