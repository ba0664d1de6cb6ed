"""The runner's IPC methods. Each takes the request's params (validated here) and
returns a JSON-able result or raises a MaqetError that becomes the error reply.

=============  ===========================================  ============================
method         params                                       result
=============  ===========================================  ============================
ping           -                                            {"pong": true, "pid": N}
status         -                                            status, pids, accel, qmp status
qmp            command, arguments={}                        QMP's "return" value
stop           timeout=STOP_TIMEOUT_S, force=false          rung, elapsed, status, reason
pause/resume   -                                            changed, status
keys           keys: ["ctrl-alt-delete", ...]               {"sent": N}, once delivered
type           text                                         {"sent": N}, once delivered
screendump     path (absolute), format="png"                {"path": ..., "format": ...}
               (the runner opens the file and hands QEMU the fd: a QEMU that dropped
               to the maqet-qemu user could not create it in the caller's directory)
serial_wait    pattern, since="boot"|N, timeout             {"match": ..., "offset": N}
serial_read    since="boot"|N, until=None, max_chars        text, since, until, offset,
                                                            truncated (escapes stripped)
serial_write   text                                         {"sent": N (bytes to the UART),
                                                            "offset": N (before them)}
host_keys      timeout=0 (>0: wait for this boot's keys)    boot, boot_offset, keys,
                                                            this_boot, known_hosts, ports
job            command, arguments={}, timeout               the concluded job (runner.jobs)
agent          command, arguments={}, agent_timeout         the guest agent's "return"
=============  ===========================================  ============================

Console offsets count characters since this runner connected; ``"boot"`` is the offset
where the current boot began (this QEMU's start, or the guest's last reset).

Streams (the connection carries messages until the reply; :mod:`.agent_ops`,
:mod:`.console`):

================  ==========================================  ===========================
agent_exec        path, arg, env, input, capture, timeout,    pid, exitcode/signal,
                  agent_timeout                               *_truncated, seconds
agent_file_write  path, agent_timeout                         size
agent_file_read   path, agent_timeout                         size
console           write=true                                  reason (why it ended)
================  ==========================================  ===========================

``keys``/``type`` and ``job`` (snapshot save/load/delete) hold one lock, the input
lock: a snapshot is never taken or loaded while keys of another request are still
being pressed.

A request that fails is recorded as a ``request_failed`` event (not those that only
read: ``ping``, ``status``, QMP ``query-*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import (
    AgentUnavailable,
    MaqetError,
    QMPCommandError,
    StateConflict,
    UsageError,
)
from maqet_engine.ipc.protocol import Request
from maqet_engine.runner import agent_ops, jobs
from maqet_engine.runner import keys as keymap
from maqet_engine.runner.agent import AgentChannel
from maqet_engine.runner.console import ConsoleHub
from maqet_engine.runner.server import Stream
from maqet_engine.runner.vm import SupervisedVM
from maqet_engine.store import VMStatus

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
# Requests that only read: their failures are no events (a metrics scrape asks often).
_READS = frozenset({"ping", "status", "agent_file_read"})
# Guest agent commands that only read (the ``agent`` method).
_AGENT_READS = ("guest-get-", "guest-info", "guest-ping", "guest-sync")
# Requests that only wait or watch: QMP events arriving meanwhile are not theirs.
_WAITS = frozenset({"serial_wait", "console"})
BOOT = "boot"  # a console offset: where the current boot began
StreamHandler = Callable[[dict[str, Any], Stream], Awaitable[Any]]


def _param(params: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = ...,
           ) -> Any:
    if key not in params or params[key] is None:
        if default is ...:
            raise UsageError(f"missing parameter {key!r}")
        return default
    value = params[key]
    if isinstance(value, bool) and kind is not bool and bool not in (
            kind if isinstance(kind, tuple) else (kind,)):
        raise UsageError(f"parameter {key!r} has the wrong type")
    if not isinstance(value, kind):
        raise UsageError(f"parameter {key!r} has the wrong type")
    return value


def _timeout(params: dict[str, Any], default: float) -> float:
    timeout = float(_param(params, "timeout", (int, float), default))
    if not 0 <= timeout < float("inf"):
        raise UsageError("timeout must be a finite number of seconds, not negative")
    return timeout


def _only(params: dict[str, Any], *allowed: str) -> None:
    unknown = set(params) - set(allowed)
    if unknown:
        raise UsageError(f"unknown parameters: {', '.join(sorted(unknown))}")


class Handlers:
    def __init__(self, vm: SupervisedVM) -> None:
        self.vm = vm
        self._passing_fd = asyncio.Lock()  # an fd sent by SCM_RIGHTS, then its add-fd
        self.input_lock = asyncio.Lock()  # keys/type vs snapshot jobs, see the docstring
        self._methods: dict[str, Handler] = {
            "ping": self.ping, "status": self.status, "qmp": self.qmp, "stop": self.stop,
            "pause": self.pause, "resume": self.resume, "keys": self.keys, "type": self.type,
            "screendump": self.screendump, "serial_wait": self.serial_wait,
            "serial_read": self.serial_read, "serial_write": self.serial_write,
            "host_keys": self.host_keys, "job": jobs.ipc_handler(vm, lock=self.input_lock),
            "agent": self.agent,
        }
        self.console = ConsoleHub(vm.serial)
        self._streams: dict[str, StreamHandler] = {
            "agent_exec": self._agent_stream(agent_ops.exec_stream),
            "agent_file_write": self._agent_stream(agent_ops.file_write_stream),
            "agent_file_read": self._agent_stream(agent_ops.file_read_stream),
            "console": self.console.attach,
        }
        self.streams = frozenset(self._streams)

    async def dispatch(self, request: Request, stream: Stream | None = None) -> Any:
        # The server hands a stream only to the methods in ``streams``.
        handler: Any = self._streams.get(request.method) if stream is not None \
            else self._methods.get(request.method)
        if handler is None:
            raise UsageError(f"unknown method {request.method!r}",
                             hint=f"methods: {', '.join(sorted(self._methods))}, "
                                  f"streams: {', '.join(sorted(self._streams))}")
        command = request.params.get("command") \
            if request.method in ("qmp", "job", "agent") else None
        reads = request.method in _READS or (
            request.method == "qmp" and str(command).startswith(("query-", "x-query-"))) or (
            request.method == "agent" and str(command).startswith(_AGENT_READS))
        try:
            with self.vm.acting(None if reads or request.method in _WAITS else request.op):
                if stream is not None:
                    return await handler(request.params, stream)
                return await handler(request.params)
        except MaqetError as err:  # an event, so that `maqet events` shows what failed
            if not reads and request.method not in _WAITS:
                self.vm.request_failed(request.method, err, command=command)
            raise

    # --- the guest agent ----------------------------------------------------------------
    def _channel(self) -> AgentChannel:
        if self.vm.agent is None:
            hint = "set 'agent: true' in its definition and restart it"
            with contextlib.suppress(MaqetError):
                if self.vm.store.require_vm(self.vm.name).spec_data.get("agent"):
                    hint = ("its definition has 'agent: true' now, but it runs the one from "
                            "before (restart_required): restart it")
            raise AgentUnavailable(f"VM {self.vm.name!r} has no guest agent channel",
                                   hint=hint)
        return self.vm.agent

    async def agent(self, params: dict[str, Any]) -> Any:
        return await agent_ops.command(self._channel(), params)

    def _agent_stream(self, operation: Callable[[AgentChannel, dict[str, Any], Stream],
                                                Awaitable[Any]]) -> StreamHandler:
        async def handler(params: dict[str, Any], stream: Stream) -> Any:
            return await operation(self._channel(), params, stream)
        return handler

    async def ping(self, params: dict[str, Any]) -> Any:
        _only(params)
        return {"pong": True, "pid": os.getpid()}

    async def status(self, params: dict[str, Any]) -> Any:
        _only(params)
        vm = self.vm
        qmp_status = None
        if not vm.exited.is_set():
            try:
                qmp_status = (await vm.execute("query-status"))["status"]
            except Exception:  # noqa: BLE001 - a status view must not fail on a dying QEMU
                qmp_status = None
        return {
            "status": vm.status.value, "qmp_status": qmp_status, "runner_pid": os.getpid(),
            "qemu_pid": vm.proc.pid if vm.proc else None, "accel": vm.accel,
            "adopted": vm.adopted, "serial_offset": vm.serial.offset,
            "boot": vm.reach.boot, "boot_offset": vm.reach.boot_offset,
            "ports": [dict(p) for p in vm.reach.ports],
            "agent": vm.agent.view() if vm.agent is not None else None,
        }

    async def qmp(self, params: dict[str, Any]) -> Any:
        _only(params, "command", "arguments")
        command = _param(params, "command", str)
        arguments = _param(params, "arguments", dict, {})
        return await self.vm.execute(command, arguments or None)

    async def stop(self, params: dict[str, Any]) -> Any:
        _only(params, "timeout", "force")
        timeout = float(_param(params, "timeout", (int, float), C.STOP_TIMEOUT_S))
        if timeout < 0:
            raise UsageError("timeout must not be negative")
        force = _param(params, "force", bool, False)
        return await self.vm.stop(timeout=timeout, force=force)

    async def pause(self, params: dict[str, Any]) -> Any:
        _only(params)
        return await self.vm.set_paused(True)

    async def resume(self, params: dict[str, Any]) -> Any:
        _only(params)
        return await self.vm.set_paused(False)

    async def keys(self, params: dict[str, Any]) -> Any:
        _only(params, "keys")
        names = _param(params, "keys", list)
        if not names or not all(isinstance(k, str) for k in names):
            raise UsageError("keys must be a non-empty list of key chords")
        chords = [keymap.chord(name) for name in names]
        return {"sent": await self._send(chords)}

    async def type(self, params: dict[str, Any]) -> Any:
        _only(params, "text")
        text = _param(params, "text", str)
        return {"sent": await self._send(keymap.text_chords(text))}

    async def _send(self, chords: list[list[str]]) -> int:
        """Press each chord, hold it ``SEND_KEY_HOLD_MS``, release it; return when the
        last key is released, i.e. in the guest's keyboard device.

        QMP ``send-key`` with a hold time would return at once and leave QEMU typing
        from its own queue for seconds, into whatever guest state comes next (a loaded
        snapshot, issue 9). ``input-send-event`` is delivered when it returns, so the
        runner paces the keys itself, like a typist; the wait is the device's pacing.
        """
        async with self.input_lock:
            for qcodes in chords:
                await self._press(qcodes)
        return len(chords)

    async def _press(self, qcodes: list[str]) -> None:
        if self.vm.status == VMStatus.PAUSED:  # QEMU refuses input then: say why
            raise StateConflict(f"VM {self.vm.name!r} is paused: the guest cannot take keys",
                                hint="resume it first")
        await self._input_event(keymap.key_events(qcodes, down=True))
        release = self._input_event(keymap.key_events(qcodes, down=False))
        try:
            await asyncio.sleep(C.SEND_KEY_HOLD_MS / 1000)
        except asyncio.CancelledError:  # never leave a key pressed
            with contextlib.suppress(MaqetError):
                await asyncio.shield(release)
            raise
        await release

    async def _input_event(self, events: list[dict[str, Any]]) -> None:
        try:
            await self.vm.execute("input-send-event", {"events": events})
        except QMPCommandError as err:
            if "not running" not in err.desc:
                raise
            raise StateConflict(f"VM {self.vm.name!r} is not running ({err.desc})",
                                hint="resume it first") from err

    async def screendump(self, params: dict[str, Any]) -> Any:
        _only(params, "path", "format")
        path = _param(params, "path", str)
        fmt = _param(params, "format", str, C.SCREENDUMP_FORMAT)
        if not os.path.isabs(path):
            raise UsageError(f"screendump path {path!r} must be absolute",
                             hint="QEMU's working directory is not yours")
        if fmt not in ("png", "ppm"):
            raise UsageError(f"unknown screendump format {fmt!r}", hint="use png or ppm")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, C.PRIVATE_FILE_MODE)
        except OSError as err:
            raise UsageError(f"screendump: cannot write {path}: {err.strerror}") from None
        try:
            fdset = await self._add_fd(fd)
        finally:
            os.close(fd)
        try:
            await self.vm.execute("screendump", {"filename": f"/dev/fdset/{fdset}",
                                                 "format": fmt})
        finally:
            with contextlib.suppress(MaqetError):
                await self.vm.execute("remove-fd", {"fdset-id": fdset})
        return {"path": path, "format": fmt}

    async def _add_fd(self, fd: int) -> int:
        """Hand QEMU ``fd`` (SCM_RIGHTS + ``add-fd``); returns its fdset id, which
        QEMU's file options accept as ``/dev/fdset/N``."""
        async with self._passing_fd:
            if self.vm.exited.is_set():
                await self.vm.execute("add-fd")  # raises the "not running" error
            self.vm.qmp.send_fd_scm(fd)
            added = await self.vm.execute("add-fd")
        return int(added["fdset-id"])

    def _since(self, params: dict[str, Any]) -> int:
        """A console offset: ``"boot"`` (default) is where the current boot began."""
        since = _param(params, "since", (int, str), BOOT)
        if since == BOOT:
            return self.vm.reach.boot_offset
        if isinstance(since, str) or since < 0:
            raise UsageError(f"since must be a console offset >= 0 or {BOOT!r}, not {since!r}")
        return since

    async def serial_wait(self, params: dict[str, Any]) -> Any:
        _only(params, "pattern", "since", "timeout")
        pattern = _param(params, "pattern", str)
        since = self._since(params)
        timeout = _timeout(params, C.SERIAL_WAIT_TIMEOUT_S)
        # Ends early when this client hangs up: the server cancels the wait.
        return await self.vm.serial.wait(pattern, since=since, timeout=timeout)

    async def serial_read(self, params: dict[str, Any]) -> Any:
        _only(params, "since", "until", "max_chars")
        since = self._since(params)
        until = _param(params, "until", int, None)
        limit = _param(params, "max_chars", int, C.SERIAL_READ_MAX_CHARS)
        if not 0 < limit <= C.SERIAL_READ_MAX_CHARS:
            raise UsageError(f"max_chars must be from 1 to {C.SERIAL_READ_MAX_CHARS}")
        return self.vm.serial.read(since, until, limit)

    async def serial_write(self, params: dict[str, Any]) -> Any:
        _only(params, "text")
        data = _param(params, "text", str).encode()
        offset = self.vm.serial.offset  # what the guest prints in reply comes after this
        await self.vm.serial.write(data)
        return {"sent": len(data), "offset": offset}

    async def host_keys(self, params: dict[str, Any]) -> Any:
        _only(params, "timeout")
        timeout = _timeout(params, 0.0)
        if timeout > 0:
            await self.vm.reach.wait_keys(timeout, self.vm.exited)
        return self.vm.reach.report()
