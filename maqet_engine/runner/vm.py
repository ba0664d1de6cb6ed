"""The VM a runner supervises: QEMU (launched or re-adopted), its QMP connection,
QMP events -> state store, the serial drain, and the stop ladder.

Status transitions written here (supervisor-style, each with an event)::

    starting -> running <-> paused
    running/paused -> stopping -> stopped | crashed
    any -> stopped | crashed          (QEMU exited: code/signal + reason in last_exit)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError

from maqet_engine import constants as C
from maqet_engine.errors import (
    MaqetError,
    OperationTimeout,
    QEMULaunchError,
    QMPCommandError,
    RunnerUnavailable,
    StateConflict,
)
from maqet_engine.paths import Paths
from maqet_engine.runner.qemu import ExitInfo, QEMUProcess, bind_qmp_socket, read_from, with_qmp_fd
from maqet_engine.runner.serial import SerialDrain
from maqet_engine.store import Store, VMStatus

_STATUS_OF_QMP = {"running": VMStatus.RUNNING, "paused": VMStatus.PAUSED,
                  "prelaunch": VMStatus.PAUSED, "inmigrate": VMStatus.PAUSED,
                  "postmigrate": VMStatus.PAUSED, "suspended": VMStatus.PAUSED,
                  "shutdown": VMStatus.STOPPING}


class SupervisedVM:
    def __init__(self, name: str, paths: Paths, store: Store, log: logging.Logger, *,
                 qemu_argv: list[str] | None) -> None:
        """``qemu_argv``: QEMU's command line as the spawner built it from the spec (None
        when there is none: then only a live QEMU can be re-adopted)."""
        self.name = name
        self.qemu_argv = qemu_argv
        self.paths = paths
        self.store = store
        self.log = log
        self.record = store.require_vm(name)
        self.runtime = paths.vm_runtime(self.record.id)
        self.data = paths.vm_data(name)
        self.qmp = QMPClient(f"maqet-{name}")
        self.proc: QEMUProcess | None = None
        self.serial = SerialDrain(self.runtime.serial_socket, log.getChild("serial"))
        self.accel: str | None = None
        self.adopted = False
        self.status = VMStatus.STARTING
        self.exited = asyncio.Event()
        self.exit_result: dict[str, Any] = {}
        self._shutdown: dict[str, Any] | None = None  # data of the SHUTDOWN event
        self._panicked = False
        self._internal_error = False
        self._kill_sent = False
        self._stop_task: asyncio.Task[dict[str, Any]] | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # --- start ---------------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Launch QEMU, or re-adopt the live one the store names. Returns the
        readiness message for the spawner."""
        previous = self.record.status
        if previous.is_active and self.record.qemu_pid:
            self.proc = QEMUProcess.adopt(self.record.qemu_pid, str(self.runtime.root))
        if self.proc is not None:
            self.adopted = True
            self.log.info("re-adopting QEMU pid %d", self.proc.pid)
            exit_future = self.proc.exit_future()
            await self._connect(exit_future, log_offset=None)
        else:
            if self.qemu_argv is None:
                # The spawner saw a live QEMU to re-adopt, which exited meanwhile.
                raise RunnerUnavailable(f"QEMU of {self.name!r} exited before its new runner "
                                        "could re-adopt it",
                                        hint=f"start it again with 'maqet start {self.name}'")
            self._remove_sockets(include_qmp=True)
            listener = bind_qmp_socket(self.runtime.qmp_socket)
            try:
                argv = with_qmp_fd(self.qemu_argv, self.runtime.qmp_socket, listener.fileno())
                log_offset = _size(self.data.qemu_log)
                self.log.info("launching QEMU: %s", " ".join(argv))
                try:
                    self.proc = QEMUProcess.launch(argv, qemu_log=self.data.qemu_log,
                                                   pass_fds=(listener.fileno(),))
                except OSError as err:
                    raise QEMULaunchError(f"cannot run {argv[0]}: {err.strerror}",
                                          argv=argv) from err
            finally:
                listener.close()  # QEMU owns it now: its death closes the socket
            self._write(status=VMStatus.STARTING, runner_pid=_pid(), qemu_pid=self.proc.pid,
                        event="starting", event_data={"qemu_pid": self.proc.pid})
            exit_future = self.proc.exit_future()
            try:
                await self._connect(exit_future, log_offset=log_offset)
            except MaqetError as err:
                self._write(status=_inactive(previous), runner_pid=None, qemu_pid=None,
                            last_exit=str(err), stopped_at=time.time(),
                            event="start_failed", event_data={"error": str(err)})
                raise
        await self.serial.start()
        self._tasks.append(asyncio.create_task(self._watch_exit(exit_future), name="qemu-exit"))
        qmp_status = await self._execute("query-status")
        kvm = await self._execute("query-kvm")
        self.accel = "kvm" if kvm.get("enabled") else "tcg"
        self.status = _STATUS_OF_QMP.get(qmp_status["status"], VMStatus.RUNNING)
        fields: dict[str, Any] = {"status": self.status, "runner_pid": _pid(),
                                  "qemu_pid": self.proc.pid, "accel": self.accel}
        if not self.adopted:
            fields.update(started_at=time.time(), stopped_at=None, last_exit=None,
                          started_hash=self.record.spec_hash)
        kind = "adopted" if self.adopted else "started"
        self._write(**fields, event=kind, event_data={"qemu_pid": self.proc.pid,
                                                       "accel": self.accel})
        if qmp_status["status"] == C.QMP_STATUS_INTERNAL_ERROR:
            await self._internal_error_stop()
        return {"ok": True, "qemu_pid": self.proc.pid, "adopted": self.adopted,
                "accel": self.accel, "status": self.status.value}

    async def _connect(self, exit_future: asyncio.Future[ExitInfo], *,
                       log_offset: int | None) -> None:
        """Connect QMP while watching QEMU's exit: a QEMU that dies during start is
        reported at once, with the tail of its log."""
        connect = asyncio.create_task(self.qmp.connect(str(self.runtime.qmp_socket)))
        done, _ = await asyncio.wait({connect, exit_future}, timeout=C.QMP_CONNECT_TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        if connect in done and connect.exception() is None:
            listener = EventListener()
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
        async for event in listener:
            kind = str(event["event"])
            data = dict(event.get("data", {}))
            self.log.info("QMP event %s %s", kind, data)
            status: VMStatus | None = None
            if kind == "SHUTDOWN":
                self._shutdown = data
                status = VMStatus.STOPPING
            elif kind == "GUEST_PANICKED":
                self._panicked = True
            elif kind == "STOP" and self.status != VMStatus.STOPPING:
                status = VMStatus.PAUSED
            elif kind == "RESUME" and self.status != VMStatus.STOPPING:
                status = VMStatus.RUNNING
            if status is not None and not self.exited.is_set():
                self.status = status
                self._write(status=status, event=kind, event_data=data)
            else:
                self._event(kind, data)
            if kind == "STOP" and not self.exited.is_set():
                with contextlib.suppress(MaqetError, QMPError):
                    current = await self._execute("query-status")
                    if current.get("status") == C.QMP_STATUS_INTERNAL_ERROR:
                        await self._internal_error_stop()

    async def _internal_error_stop(self) -> None:
        """KVM emulation failure: the guest is dead although QEMU lives. Report crashed
        at once (quit QEMU) rather than letting callers wait for a boot that never ends."""
        self.log.error("guest stopped with internal-error (KVM emulation failure?)")
        self._internal_error = True
        with contextlib.suppress(MaqetError, QMPError):
            await self._execute("quit")

    async def _watch_exit(self, exit_future: asyncio.Future[ExitInfo]) -> None:
        info = await exit_future
        status, reason = self._classify(info)
        self.log.info("QEMU exited: %s (%s)", reason, status.value)
        self.status = status
        with contextlib.suppress(Exception):
            await self.qmp.disconnect()
        await self.serial.close()
        self._remove_sockets(include_qmp=True)
        self.exit_result = {"status": status.value, "reason": reason, "code": info.code,
                            "signal": info.signal}
        try:
            self._write(status=status, runner_pid=None, qemu_pid=None, stopped_at=time.time(),
                        last_exit=reason, event=status.value, event_data=self.exit_result)
        finally:
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
    async def _execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        try:
            return await self.qmp.execute(command, arguments)
        except ExecuteError as err:
            raise QMPCommandError(command, err.error_class, err.error.error.desc) from err
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
        self.status = wanted
        self._write(status=wanted)
        return {"changed": True, "status": wanted.value}

    # --- stop ladder --------------------------------------------------------------------
    async def stop(self, *, timeout: float, force: bool) -> dict[str, Any]:
        """powerdown (unless force) -> quit -> SIGKILL; returns after QEMU exited."""
        if self.exited.is_set():
            return {"rung": None, "elapsed": 0.0, **self.exit_result}
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._ladder(timeout, force), name="stop")
        return await asyncio.shield(self._stop_task)

    async def _ladder(self, timeout: float, force: bool) -> dict[str, Any]:
        start = time.monotonic()
        polite = not force and self.status != VMStatus.PAUSED  # ACPI needs a running guest
        self.status = VMStatus.STOPPING
        self._write(status=VMStatus.STOPPING, event="stop_requested",
                    event_data={"timeout": timeout, "force": force})
        rungs: list[tuple[str, float]] = [("powerdown", timeout)] if polite else []
        rungs += [("quit", C.QUIT_TIMEOUT_S), ("kill", C.KILL_TIMEOUT_S)]
        for rung, wait in rungs:
            self.log.info("stop: %s (wait up to %g s)", rung, wait)
            if self.exited.is_set():
                break
            if rung == "kill":
                self._kill_sent = True
                assert self.proc is not None
                self.proc.send_signal(9)
            else:
                with contextlib.suppress(MaqetError):
                    await self._execute("system_powerdown" if rung == "powerdown" else "quit")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exited.wait(), wait)
            if self.exited.is_set():
                return {"rung": rung, "elapsed": round(time.monotonic() - start, 3),
                        **self.exit_result}
        if self.exited.is_set():
            return {"rung": None, "elapsed": round(time.monotonic() - start, 3),
                    **self.exit_result}
        raise OperationTimeout(f"QEMU of {self.name!r} did not exit even after SIGKILL")

    # --- helpers --------------------------------------------------------------------------
    def _write(self, **fields: Any) -> None:
        try:
            self.store.update_runtime(self.name, **fields)
        except MaqetError as err:  # the store is the record, but never kill QEMU over it
            self.log.error("cannot record state: %s", err)

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self.store.add_event(self.name, kind, data)
        except MaqetError as err:
            self.log.error("cannot record event %s: %s", kind, err)

    def _remove_sockets(self, *, include_qmp: bool) -> None:
        paths: list[Path] = [self.runtime.serial_socket]
        if include_qmp:
            paths.append(self.runtime.qmp_socket)
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await self.qmp.disconnect()
        await self.serial.close()


def _pid() -> int:
    import os

    return os.getpid()


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
