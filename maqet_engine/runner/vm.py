"""The VM a runner supervises: QEMU (launched or re-adopted), its QMP connection,
QMP events -> state store, the serial drain, and the stop ladder.

Start-up runs in phases, launch (or adopt) then post-launch, and a failed start always
cleans up: the QEMU this runner launched is killed and the failure recorded. Every
status change goes through :meth:`SupervisedVM.transition`, which checks it against
the table in :mod:`.states` and records it with an event.

Each event carries the operation that caused it (:meth:`SupervisedVM.cause`): the one
whose request is being handled, else the stop under way, else the one request acting
on QEMU when a QMP event arrives, else (during start-up) the starting operation; the
guest's own doings (a shutdown from inside, a crash) carry none.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError, Runstate

from maqet_engine import constants as C
from maqet_engine import ops
from maqet_engine.errors import (
    MaqetError,
    OperationTimeout,
    QEMULaunchError,
    QEMUNotFound,
    QMPCommandError,
    RunnerUnavailable,
    StateConflict,
)
from maqet_engine.frozen import Frozen
from maqet_engine.ipc import procs
from maqet_engine.paths import Paths
from maqet_engine.runner import states
from maqet_engine.runner.agent import AgentChannel
from maqet_engine.runner.qemu import ExitInfo, QEMUProcess, read_from
from maqet_engine.runner.reach import GuestReach, guest_ssh_port, parse_usernet
from maqet_engine.runner.serial import SerialDrain
from maqet_engine.store import Store, VMStatus

_STATUS_OF_QMP = {"running": VMStatus.RUNNING, "paused": VMStatus.PAUSED,
                  "prelaunch": VMStatus.PAUSED, "inmigrate": VMStatus.PAUSED,
                  "postmigrate": VMStatus.PAUSED, "suspended": VMStatus.PAUSED,
                  "shutdown": VMStatus.STOPPING}


class Launch(Frozen):
    """What the spawner hands a runner that must start QEMU: the command line (built
    from the spec by the caller), the pre-bound listening sockets it names (QMP's, and
    the guest agent's or None), other fds it names (tap devices), the segments whose
    sockets to confine (their interface only, their TTL), and the networks' hashes to
    record with the start."""

    __slots__ = ("argv", "qmp_fd", "agent_fd", "fds", "multicast", "started_networks")
    argv: list[str]
    qmp_fd: int
    agent_fd: int | None
    fds: list[int]
    multicast: list[tuple[str, int, int]]  # (group, port, ttl) of each segment
    started_networks: str | None

    def __init__(self, *, argv: list[str], qmp_fd: int, agent_fd: int | None = None,
                 fds: list[int] | None = None,
                 multicast: list[tuple[str, int, int]] | None = None,
                 started_networks: str | None = None) -> None:
        super().__init__(argv=argv, qmp_fd=qmp_fd, agent_fd=agent_fd, fds=list(fds or []),
                         multicast=list(multicast or []),
                         started_networks=started_networks)

    @property
    def inherited(self) -> tuple[int, ...]:
        """Every fd QEMU inherits: the listening sockets, then the tap devices."""
        sockets = (self.qmp_fd,) if self.agent_fd is None else (self.qmp_fd, self.agent_fd)
        return (*sockets, *self.fds)

    def close_fds(self) -> None:
        """Close this process's copies of the fds QEMU was to inherit (QEMU holds its
        own once launched: a tap device then lives exactly as long as QEMU)."""
        for fd in self.inherited:
            with contextlib.suppress(OSError):
                os.close(fd)


class SupervisedVM:
    def __init__(self, name: str, paths: Paths, store: Store, log: logging.Logger, *,
                 launch: Launch | None, op_id: str | None = None) -> None:
        """``launch``: how to start QEMU (None when there is nothing to launch: then
        only a live QEMU can be re-adopted). ``op_id``: the operation that started
        this runner."""
        self.name = name
        self.op_id = op_id
        self._starting = True  # until the start is recorded (or failed)
        self._stop_op: str | None = None  # the operation of the stop under way
        self._acting: dict[str, int] = {}  # operations whose requests act on QEMU now
        self.launch = launch
        self.paths = paths
        self.store = store
        self.log = log
        self.record = store.require_vm(name)
        self.runtime = paths.vm_runtime(self.record.id)
        self.data = paths.vm_data(name)
        self.qmp = QMPClient(f"maqet-{name}")
        self.proc: QEMUProcess | None = None
        self.serial = SerialDrain(self.runtime.serial_socket, log.getChild("serial"))
        self.reach = GuestReach(self.serial, self.data.known_hosts,
                                guest_ssh_port(self.record.spec_data), log.getChild("reach"),
                                self._event, vm_name=name)
        self.agent: AgentChannel | None = None  # VMs with a guest agent port (agent: true)
        self._agent_port_open: bool | None = None  # last VSERPORT_CHANGE (None: unknown)
        self.accel: str | None = None
        self.adopted = False
        self.status = self.record.status  # where this runner begins (see states.py)
        self.exited = asyncio.Event()
        self.exit_result: dict[str, Any] = {}
        self._shutdown: dict[str, Any] | None = None  # data of the SHUTDOWN event
        self._panicked = False
        self._internal_error = False
        self._kill_sent = False
        self._escalate = asyncio.Event()  # a forced stop arrived during a polite one
        self._previous = self.record.status  # the status before this runner's start
        self._aborting = False  # a failed start is being cleaned up (it records the end)
        self._exit_watch: asyncio.Task[None] | None = None
        self._listener: EventListener | None = None  # QMP events, read by _watch_events
        # Run-state columns the store refused (a full or read-only disk): written with
        # the next record that succeeds, so the store catches up once space returns.
        self._unrecorded: dict[str, Any] = {}
        self._stop_task: asyncio.Task[dict[str, Any]] | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # --- the one way the run status changes ------------------------------------------
    def transition(self, status: VMStatus, event: str, data: dict[str, Any] | None = None, *,
                   critical: bool = False, **fields: Any) -> None:
        """Move to ``status`` (checked against :mod:`.states`), record it with ``fields``
        and the event ``event`` in the store. A store failure is logged and the VM goes
        on (never kill a guest over bookkeeping) unless ``critical`` (start-up: then the
        caller aborts the start)."""
        states.check(self.status, status)
        cause = self.cause()
        if status != self.status:
            self.log.info("status %s -> %s (%s)", self.status.value, status.value, event,
                          extra={"event": event, "op": cause})
        self.status = status
        self._record(event, data or {}, critical=critical, op_id=cause, status=status,
                     **fields)

    def cause(self) -> str | None:
        """The operation an event recorded now belongs to (see the module docstring)."""
        op = ops.current_op()
        if op is not None:
            return op
        if self._stop_op is not None and self.status == VMStatus.STOPPING:
            return self._stop_op
        if len(self._acting) == 1:
            return next(iter(self._acting))
        return self.op_id if self._starting else None

    @contextlib.contextmanager
    def acting(self, op_id: str | None) -> Any:
        """While a request of operation ``op_id`` acts on QEMU, QMP events that arrive
        are that operation's (when it is the only one acting)."""
        if op_id is None:
            yield
            return
        self._acting[op_id] = self._acting.get(op_id, 0) + 1
        try:
            yield
        finally:
            self._acting[op_id] -= 1
            if not self._acting[op_id]:
                del self._acting[op_id]

    def request_failed(self, method: str, err: MaqetError, *, command: str | None = None,
                       ) -> None:
        """Record a request that ended in an error (handlers.py decides which count)."""
        data: dict[str, Any] = {"method": method, "error": err.type_name,
                                "message": str(err)[:C.IPC_ERROR_CHARS]}
        if command is not None:
            data["command"] = command
        self.log.info("request %s%s failed: %s", method, f" {command}" if command else "",
                      err, extra={"event": "request_failed"})
        self._event("request_failed", data)

    @property
    def recorded(self) -> bool:
        """The store holds every run-state change of this runner."""
        return not self._unrecorded

    def _record(self, event: str, data: dict[str, Any], *, critical: bool = False,
                op_id: str | None = None, **fields: Any) -> None:
        """Write an event, with ``fields`` and whatever an earlier failed write left, in
        one transaction. On failure the fields wait for the next write; the event is
        only logged. A full disk must not cost control of the VM: nothing raises here
        unless ``critical``."""
        fields = {**self._unrecorded, **fields}
        op_id = op_id if op_id is not None else self.cause()
        try:
            if fields:
                self.store.update_runtime(self.name, event=event, event_data=data,
                                          op_id=op_id, **fields)
            else:
                self.store.add_event(self.name, event, data, op_id=op_id)
        except MaqetError as err:
            self._unrecorded = fields
            self.log.error("cannot record %s: %s", event, err)
            if critical:
                raise
            return
        self._unrecorded = {}

    # --- start: launch or adopt, then post-launch; cleanup always runs ---------------------
    async def start(self) -> dict[str, Any]:
        """Launch QEMU, or re-adopt the live one the store names. Returns the
        readiness message for the spawner. A failed start leaves no QEMU it launched."""
        previous = self._previous
        adoptable = previous.is_active
        proc = (QEMUProcess.adopt(self.record.qemu_pid, self.record.qemu_start)
                if adoptable else None)
        try:
            if proc is not None:
                if self.launch is not None:  # the QEMU to launch instead came back to life
                    self.launch.close_fds()
                await self._adopt(proc)
            else:
                await self._launch()
            return await self._post_launch()
        except BaseException as err:
            await self._abort_start(previous, err)
            raise

    async def _launch(self) -> None:
        if self.launch is None:
            # The spawner saw a live QEMU to re-adopt, which exited meanwhile.
            raise RunnerUnavailable(f"QEMU of {self.name!r} exited before its new runner "
                                    "could re-adopt it", hint="start it again")
        if self.status.is_active:  # recorded active, but that QEMU is gone: fresh start
            self.status = VMStatus.CRASHED
        self._agent_port_open = False  # a new guest has not opened it yet
        argv = self.launch.argv
        with contextlib.suppress(FileNotFoundError):
            self.runtime.serial_socket.unlink()
        log_offset = _size(self.data.qemu_log)
        self.log.info("launching QEMU: %s", " ".join(argv))
        try:
            self.proc = QEMUProcess.launch(argv, qemu_log=self.data.qemu_log,
                                           pass_fds=self.launch.inherited)
        except FileNotFoundError as err:
            raise QEMUNotFound(f"QEMU binary {argv[0]!r} not found",
                               hint="install it (Debian: apt install qemu-system-x86) or "
                               "set 'binary' in the definition") from err
        except OSError as err:
            raise QEMULaunchError(f"cannot run {argv[0]}: {err.strerror}", argv=argv) from err
        finally:
            # QEMU owns the listening sockets and the tap devices now: with our copies
            # closed, a tap device vanishes when QEMU exits, whatever becomes of us.
            self.launch.close_fds()
        self.transition(VMStatus.STARTING, "starting", {"qemu_pid": self.proc.pid},
                        critical=True, runner_pid=os.getpid(), runner_start=_own_start(),
                        qemu_pid=self.proc.pid, qemu_start=self.proc.started)
        await self._connect(self.proc.exit_future(), log_offset=log_offset)

    async def _adopt(self, proc: QEMUProcess) -> None:
        self.proc = proc
        self.adopted = True
        self.log.info("re-adopting QEMU pid %d", proc.pid)
        await self._connect(proc.exit_future(), log_offset=None)

    async def _post_launch(self) -> dict[str, Any]:
        assert self.proc is not None
        await self.serial.start()
        await self._start_agent()
        exit_future = self.proc.exit_future()
        self._exit_watch = asyncio.create_task(self._watch_exit(exit_future), name="qemu-exit")
        self._tasks.append(self._exit_watch)
        qmp_status = await self._execute("query-status", bound=C.QMP_CONNECT_TIMEOUT_S)
        kvm = await self._execute("query-kvm", bound=C.QMP_CONNECT_TIMEOUT_S)
        self.accel = "kvm" if kvm.get("enabled") else "tcg"
        status = _STATUS_OF_QMP.get(qmp_status["status"], VMStatus.RUNNING)
        self.reach.start(await self._bound_ports())
        fields: dict[str, Any] = {"runner_pid": os.getpid(), "runner_start": _own_start(),
                                  "qemu_pid": self.proc.pid, "qemu_start": self.proc.started,
                                  "accel": self.accel,
                                  "ports_json": json.dumps(self.reach.ports)}
        if not self.adopted:
            fields.update(started_at=time.time(), stopped_at=None, last_exit=None,
                          started_hash=self.record.spec_hash,
                          started_networks=self.launch.started_networks
                          if self.launch is not None else None)
            if self.launch is not None and self.launch.multicast:
                from maqet_engine.runner.multicast import confine_multicast

                confine_multicast(self.proc.pid, self.proc.pidfd, self.launch.multicast)
        kind = "adopted" if self.adopted else "started"
        if self.adopted and status == VMStatus.STOPPING:
            status = self.status  # a stop was under way: QMP cannot tell
        # A start the store cannot record is refused (maqet would run a VM it cannot
        # track); a re-adoption goes on regardless: the VM runs already, and a runner
        # is what keeps it controllable (the record catches up with the next write).
        self.transition(status, kind, {"qemu_pid": self.proc.pid, "accel": self.accel},
                        critical=not self.adopted, **fields)
        self._starting = False
        self._tasks.append(asyncio.create_task(self.reach.watch(), name="host-keys"))
        if qmp_status["status"] == C.QMP_STATUS_INTERNAL_ERROR:
            await self._internal_error_stop()
        return {"ok": True, "qemu_pid": self.proc.pid, "adopted": self.adopted,
                "accel": self.accel, "status": self.status.value}

    async def _bound_ports(self) -> list[dict[str, Any]]:
        """The user-net forwards as QEMU bound them (HMP ``info usernet``): the real
        port of each ``host: auto`` forward. A QEMU that cannot say gives none."""
        try:
            text = await self._execute("human-monitor-command",
                                       {"command-line": "info usernet"},
                                       bound=C.QMP_CONNECT_TIMEOUT_S)
        except MaqetError as err:
            self.log.warning("cannot read the forwarded ports: %s", err)
            return []
        return parse_usernet(text if isinstance(text, str) else "")

    async def _start_agent(self) -> None:
        """Connect the guest agent's channel when QEMU has one (``agent: true`` when it
        was launched: its chardev tells, whatever the stored definition says now)."""
        chardevs = await self._execute("query-chardev", bound=C.QMP_CONNECT_TIMEOUT_S)
        if not any(c.get("label") == C.AGENT_CHARDEV_ID for c in chardevs):
            return
        self.agent = AgentChannel(self.runtime.agent_socket, self.log.getChild("agent"),
                                  port_open=self._agent_port_open)
        try:
            await self.agent.start()
        except OSError as err:  # its socket was removed (runtime directory gone)
            self.log.error("cannot connect the guest agent's channel %s: %s",
                           self.runtime.agent_socket, err)
            await self.agent.close()
            self.agent.reason = f"cannot connect the agent's channel: {err.strerror or err}"

    async def abort_start(self, err: BaseException) -> None:
        """A start that failed after :meth:`start` returned (the runner could not serve
        its control socket): the same cleanup as a failure inside it."""
        await self._abort_start(self._previous, err)

    async def _abort_start(self, previous: VMStatus, err: BaseException) -> None:
        """Cleanup of a failed start, whatever phase it reached: kill the QEMU this
        runner launched (never one it was adopting) and record why, unless QEMU's own
        exit was recorded already. Never raises: the start's error is what to report."""
        self._aborting = True  # from here the exit watcher leaves the record to us
        reason = str(err) if isinstance(err, MaqetError) else f"{type(err).__name__}: {err}"
        launched = self.proc is not None and not self.adopted
        if launched and self.proc is not None:
            exit_future = self.proc.exit_future()
            if not exit_future.done():
                self._kill_sent = True
                self.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exit_future), C.KILL_TIMEOUT_S)
            if exit_future.done() and not exit_future.cancelled():
                reason += f" (QEMU {exit_future.result().describe()})"
        watch = self._exit_watch
        if watch is not None and not watch.done():  # it saw the exit first: let it finish
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(watch), C.KILL_TIMEOUT_S)
        if self.adopted or self.exited.is_set():
            return
        # Back to the status before the start (nothing launched: it stays as it is); a
        # start that got further (QEMU events moved it on) ends stopped: maqet killed it.
        final = self.status
        if self.status == VMStatus.STARTING:
            final = _inactive(previous)
        elif self.status.is_active:
            final = VMStatus.STOPPED
        try:
            self.transition(final, "start_failed", {"error": reason}, runner_pid=None,
                            runner_start=None, qemu_pid=None, qemu_start=None,
                            ports_json=None, last_exit=reason, stopped_at=time.time())
        except MaqetError as record_err:  # never hide the start's own error
            self.log.error("cannot record the failed start: %s", record_err)
        if launched and self.proc is not None:
            self.proc.close()
            self.exited.set()

    async def _connect(self, exit_future: asyncio.Future[ExitInfo], *,
                       log_offset: int | None) -> None:
        """Connect QMP while watching QEMU's exit: a QEMU that dies during start is
        reported at once, with the tail of its log."""
        # qemu.qmp's reader and writer tasks outlive the start: not under its op id.
        outside = contextvars.copy_context()
        outside.run(ops.current.set, None)
        connect = asyncio.create_task(self.qmp.connect(str(self.runtime.qmp_socket)),
                                      context=outside)
        done, _ = await asyncio.wait({connect, exit_future}, timeout=C.QMP_CONNECT_TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        if connect in done and connect.exception() is None:
            listener = self._listener = EventListener()
            self.qmp.register_listener(listener)
            self._tasks.append(asyncio.create_task(self._watch_events(listener), name="qmp-events"))
            return
        connect.cancel()
        with contextlib.suppress(BaseException):
            await connect
        if exit_future.done() or connect in done:
            if not exit_future.done():  # connection refused: QEMU is dying; wait for it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exit_future), C.KILL_TIMEOUT_S)
            info = exit_future.result() if exit_future.done() else ExitInfo(code=None, signal=None)
            tail = _launch_tail(self.data.qemu_log, log_offset)
            if exit_future.done():
                raise QEMULaunchError(f"QEMU exited during start ({info.describe()})",
                                      log_tail=tail)
            raise QEMULaunchError(f"QMP connection failed: {connect.exception()}", log_tail=tail)
        if self.proc is not None and not self.adopted:
            self.proc.send_signal(9)
        raise OperationTimeout(
            f"QEMU did not answer QMP within {C.QMP_CONNECT_TIMEOUT_S:g} s",
            hint=f"see {self.data.qemu_log}",
        )

    # --- events and exit ----------------------------------------------------------------
    async def _watch_events(self, listener: EventListener) -> None:
        ops.current.set(None)  # created during start-up: QMP events find their cause
        async for event in listener:
            kind = self._on_event(event)
            if kind == "STOP" and not self.exited.is_set():
                with contextlib.suppress(MaqetError, QMPError):
                    current = await self._execute("query-status")
                    if current.get("status") == C.QMP_STATUS_INTERNAL_ERROR:
                        await self._internal_error_stop()

    def _on_event(self, event: Any) -> str:
        """Record one QMP event (and the status it implies); returns its kind."""
        kind = str(event["event"])
        data = dict(event.get("data", {}))
        self.log.info("QMP event %s %s", kind, data, extra={"event": kind, "op": self.cause()})
        status: VMStatus | None = None
        if kind == "SHUTDOWN":
            self._shutdown = data
            status = VMStatus.STOPPING
        elif kind == "GUEST_PANICKED":
            self._panicked = True
        elif kind == "RESET":  # a new boot: console waits and host keys count from here
            self.reach.new_boot()
            data.update(boot=self.reach.boot, console_offset=self.reach.boot_offset)
        elif kind == "STOP" and self.status != VMStatus.STOPPING:
            status = VMStatus.PAUSED
        elif kind == "RESUME" and self.status != VMStatus.STOPPING:
            status = VMStatus.RUNNING
        elif kind == "VSERPORT_CHANGE" and data.get("id") == C.AGENT_PORT_ID:
            self._agent_port_open = bool(data.get("open"))
            if self.agent is not None:
                self.agent.port_changed(self._agent_port_open)
        if status is not None and not self.exited.is_set():
            self.transition(status, kind, data)
        else:
            self._event(kind, data)
        return kind

    async def _settle_events(self) -> None:
        """After QEMU exited: let the QMP reader reach the end of what QEMU sent (its
        last events, e.g. SHUTDOWN, may still be in the socket when the exit is seen),
        then handle the events not handled yet — so the exit is classified knowing them."""
        deadline = time.monotonic() + C.QMP_LADDER_CALL_TIMEOUT_S
        while (remaining := deadline - time.monotonic()) > 0:
            # qemu.qmp pulses its state event (set, then clear at once): only a waiter
            # already registered sees it. Register first, yield once, then look.
            waiter = asyncio.ensure_future(self.qmp.runstate_changed())
            await asyncio.sleep(0)
            if self.qmp.runstate != Runstate.RUNNING:
                waiter.cancel()
                break
            await asyncio.wait({waiter}, timeout=remaining)
            waiter.cancel()
        if self._listener is not None:
            for event in self._listener.clear():
                self._on_event(event)

    async def _internal_error_stop(self) -> None:
        """KVM emulation failure: the guest is dead although QEMU lives. Report crashed
        at once (quit QEMU) rather than letting callers wait for a boot that never ends."""
        self.log.error("guest stopped with internal-error (KVM emulation failure?)")
        self._internal_error = True
        with contextlib.suppress(MaqetError, QMPError):
            await self._execute("quit", bound=C.QMP_LADDER_CALL_TIMEOUT_S)

    async def _watch_exit(self, exit_future: asyncio.Future[ExitInfo]) -> None:
        ops.current.set(None)  # created during start-up: the exit finds its cause
        info = await exit_future
        if self._aborting:  # a failed start killed it: _abort_start records that
            return
        await self._settle_events()
        status, reason = self._classify(info)
        self.log.info("QEMU exited: %s (%s)", reason, status.value,
                      extra={"op": self.cause()})
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.qmp.disconnect(), C.QMP_LADDER_CALL_TIMEOUT_S)
        await self.serial.close()
        if self.agent is not None:
            await self.agent.close()
        self._remove_sockets(include_qmp=True)
        self.exit_result = {"status": status.value, "reason": reason, "code": info.code,
                            "signal": info.signal}
        try:
            self.transition(status, status.value, dict(self.exit_result), runner_pid=None,
                            runner_start=None, qemu_pid=None, qemu_start=None,
                            ports_json=None, stopped_at=time.time(), last_exit=reason)
        finally:
            # False: the store still says active (full or read-only disk); the caller
            # of a stop records the end itself, or says it could not.
            self.exit_result["recorded"] = self.recorded
            if self.proc is not None:
                self.proc.close()
            self.exited.set()

    def _classify(self, info: ExitInfo) -> tuple[VMStatus, str]:
        shutdown_reason = (self._shutdown or {}).get("reason")
        how = info.describe()
        if self._internal_error:
            return VMStatus.CRASHED, f"guest stopped with internal-error (KVM emulation " \
                                     f"failure?); QEMU quit ({how})"
        if info.signal is not None:
            if self._kill_sent:
                return VMStatus.STOPPED, f"{how} by maqet stop"
            return VMStatus.CRASHED, f"QEMU {how}"
        if info.code not in (None, 0):
            tail = read_from(self.data.qemu_log, 0, lines=1).strip()
            return VMStatus.CRASHED, f"QEMU {how}" + (f": {tail}" if tail else "")
        if self._panicked or shutdown_reason == "guest-panic":
            return VMStatus.CRASHED, f"guest panicked ({how})"
        if self._shutdown is not None:
            return VMStatus.STOPPED, f"{how}, shutdown reason {shutdown_reason}"
        if self._kill_sent:
            return VMStatus.STOPPED, "killed by maqet stop"
        if info.code == 0:
            return VMStatus.STOPPED, how
        return VMStatus.CRASHED, f"QEMU exited without a shutdown event; {how}"

    # --- QMP ------------------------------------------------------------------------------
    async def _execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                       bound: float | None = None) -> Any:
        """One QMP command; ``bound`` caps the wait for QEMU's reply (a QEMU that is
        stopped or wedged never answers)."""
        try:
            if bound is None:
                return await self.qmp.execute(command, arguments)
            return await asyncio.wait_for(self.qmp.execute(command, arguments), bound)
        except ExecuteError as err:
            raise QMPCommandError(command, err.error_class, err.error.error.desc) from err
        except TimeoutError as err:
            raise OperationTimeout(f"QEMU did not answer QMP {command} within {bound:g} s",
                                   hint="QEMU is hung or stopped (SIGSTOP?); stop it with "
                                   "force") from err
        except QMPError as err:
            raise RunnerUnavailable(f"QMP {command} failed: {err}",
                                    hint="QEMU is exiting or exited") from err

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """A QMP command from a client (the VM must still be up)."""
        if self.exited.is_set():
            raise StateConflict(f"VM {self.name!r} is {self.status.value}")
        return await self._execute(command, arguments)

    async def set_paused(self, paused: bool) -> dict[str, Any]:
        if self.status == VMStatus.STOPPING or self.exited.is_set():
            raise StateConflict(f"VM {self.name!r} is {self.status.value}")
        wanted = VMStatus.PAUSED if paused else VMStatus.RUNNING
        if self.status == wanted:
            return {"changed": False, "status": wanted.value}
        await self._execute("stop" if paused else "cont")
        self.transition(wanted, "paused" if paused else "resumed")
        return {"changed": True, "status": wanted.value}

    # --- stop ladder --------------------------------------------------------------------
    async def stop(self, *, timeout: float, force: bool) -> dict[str, Any]:
        """powerdown (unless force) -> quit -> SIGKILL; returns after QEMU exited.

        Every QMP call on the way is bounded, so a wedged QEMU reaches SIGKILL. Callers
        that arrive during a stop join it; a forced one cuts a polite wait short. A
        ladder that fails is forgotten: the next stop starts a new one.
        """
        if self.exited.is_set():
            return {"rung": None, "elapsed": 0.0, **self.exit_result}
        if force:
            self._escalate.set()
        if self._stop_task is None or self._stop_task.done():
            self._stop_op = ops.current_op()  # QEMU's exit and its events are this stop's
            self._stop_task = asyncio.create_task(self._ladder(timeout, force), name="stop")
        task = self._stop_task
        try:
            return await asyncio.shield(task)
        except MaqetError:
            if self._stop_task is task:
                self._stop_task = None
                self._stop_op = None
            raise

    async def _ladder(self, timeout: float, force: bool) -> dict[str, Any]:
        start = time.monotonic()
        polite = not force and self.status != VMStatus.PAUSED  # ACPI needs a running guest
        if self.status != VMStatus.STOPPING:
            self.transition(VMStatus.STOPPING, "stop_requested",
                            {"timeout": timeout, "force": force})
        rungs: list[tuple[str, float]] = [("powerdown", timeout)] if polite else []
        rungs += [("quit", C.QUIT_TIMEOUT_S), ("kill", C.KILL_TIMEOUT_S)]
        for rung, wait in rungs:
            if self.exited.is_set():
                break
            if rung == "powerdown" and self._escalate.is_set():
                continue
            self.log.info("stop: %s (wait up to %g s)", rung, wait,
                          extra={"event": "stop_rung"})
            self._event("stop_rung", {"rung": rung, "wait": wait})
            if rung == "kill":
                self._kill_sent = True
                assert self.proc is not None
                self.proc.send_signal(signal.SIGKILL)
            else:
                command = "system_powerdown" if rung == "powerdown" else "quit"
                try:
                    await self._execute(command, bound=C.QMP_LADDER_CALL_TIMEOUT_S)
                except MaqetError as err:  # unanswered: QEMU never took it, go on at once
                    self.log.warning("stop: %s: %s", rung, err)
                    continue
            await self._wait_exit(wait, escalate=rung == "powerdown")
            if self.exited.is_set():
                return {"rung": rung, "elapsed": round(time.monotonic() - start, 3),
                        **self.exit_result}
        if self.exited.is_set():
            return {"rung": None, "elapsed": round(time.monotonic() - start, 3),
                    **self.exit_result}
        raise OperationTimeout(f"QEMU of {self.name!r} did not exit even after SIGKILL",
                               hint="it may be stuck in the kernel (D state); see "
                               f"/proc/{self.proc.pid if self.proc else '?'}/stack")

    async def _wait_exit(self, wait: float, *, escalate: bool) -> None:
        """Wait up to ``wait`` s for QEMU's exit (or for a forced stop, when ``escalate``)."""
        waiters = [asyncio.ensure_future(self.exited.wait())]
        if escalate:
            waiters.append(asyncio.ensure_future(self._escalate.wait()))
        try:
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # --- helpers --------------------------------------------------------------------------
    def _event(self, kind: str, data: dict[str, Any]) -> None:
        self._record(kind, data)

    def _remove_sockets(self, *, include_qmp: bool) -> None:
        paths: list[Path] = [self.runtime.serial_socket]
        if include_qmp:
            paths += [self.runtime.qmp_socket, self.runtime.agent_socket]
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):  # bounded: a wedged QEMU never answers
            await asyncio.wait_for(self.qmp.disconnect(), C.QMP_LADDER_CALL_TIMEOUT_S)
        await self.serial.close()
        if self.agent is not None:
            await self.agent.close()


def _own_start() -> int:
    return procs.own_start_time()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _inactive(status: VMStatus) -> VMStatus:
    return status if not status.is_active else VMStatus.STOPPED


def _launch_tail(qemu_log: Path, offset: int | None) -> str:
    text = read_from(qemu_log, offset or 0)
    return "\n".join(line for line in text.splitlines() if not line.startswith("--- maqet "))
