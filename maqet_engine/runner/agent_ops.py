"""The guest agent's IPC methods (runner side; the channel is :mod:`.agent`).

``agent``             one agent command (``guest-get-osinfo``, ...): its return value
``agent_exec``        stream: stdin in, run a program with ``guest-exec``, output out
``agent_file_write``  stream: bytes in, written to a guest file in chunks
``agent_file_read``   stream: a guest file's bytes out, read in chunks

Every agent round trip is bounded by the request's ``agent_timeout``; ``agent_exec``
also by its ``timeout`` (the command's whole run, None: as long as it runs). Stream
data is base64 (``{"data": ...}``), at most ``IPC_STREAM_CLIENT_CHUNK`` raw bytes per
client line and ``IPC_STREAM_RUNNER_CHUNK`` per runner line; the runner writes and reads
the guest in ``AGENT_FILE_CHUNK`` pieces (one agent command each, measured best).

``guest-exec`` keeps a command's output in qemu-ga until it exits, at most
``AGENT_EXEC_OUTPUT_CAP`` (16 MiB in qemu-ga 7.2) per stream, and reports what it cut
(``stdout_truncated``). The runner asks ``guest-exec-status`` with a growing pause
(``AGENT_EXEC_POLL_FIRST_S`` x 1.5 up to ``AGENT_EXEC_POLL_MAX_S``, 50 ms, and after
``AGENT_EXEC_POLL_SLOW_AFTER_S`` of a long command up to ``AGENT_EXEC_POLL_SLOW_S``):
that is how qemu-ga reports an exit. Between two asks the channel serves other requests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from maqet_engine import constants as C
from maqet_engine.errors import (
    AgentCommandError,
    AgentUnavailable,
    MaqetError,
    OperationTimeout,
    UsageError,
)
from maqet_engine.ipc.protocol import ProtocolError
from maqet_engine.runner.agent import AgentChannel
from maqet_engine.runner.server import Stream

T = TypeVar("T")
# The channel's own protocol: a client's guest-sync would leave it out of step.
REFUSED_COMMANDS = frozenset({"guest-sync", "guest-sync-delimited"})
_B64_RUNNER_CHUNK = C.IPC_STREAM_RUNNER_CHUNK // 3 * 4  # base64 characters per runner line


class _HungUp(Exception):  # noqa: N818 - internal
    """The client hung up during a stream: nobody is left to answer."""


def _timeout(params: dict[str, Any], key: str, default: float | None) -> float | None:
    value = params.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 < value < float("inf"):
        raise UsageError(f"parameter {key!r} must be a positive number of seconds")
    return float(value)


def _agent_timeout(params: dict[str, Any]) -> float:
    value = _timeout(params, "agent_timeout", C.AGENT_TIMEOUT_S)
    assert value is not None
    return value


def _only(params: dict[str, Any], *allowed: str) -> None:
    unknown = set(params) - set(allowed)
    if unknown:
        raise UsageError(f"unknown parameters: {', '.join(sorted(unknown))}")


def _string_list(params: dict[str, Any], key: str) -> list[str] | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"parameter {key!r} must be a list of strings")
    return value


def _guest_path(params: dict[str, Any]) -> str:
    path = params.get("path")
    if not isinstance(path, str) or not path:
        raise UsageError("parameter 'path' must be a path in the guest")
    return path


async def _unless_hung_up(stream: Stream, work: Awaitable[T]) -> T:
    """Run ``work`` while watching the client: if it hangs up first, stop and raise
    :class:`_HungUp`."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(stream.hung_up())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        watch.result()  # a ProtocolError from the client is raised here
        raise _HungUp
    finally:
        for pending in (task, watch):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending


async def _send_b64(stream: Stream, kind: str, text: str) -> None:
    """Base64 text to the client, cut at multiples of 4 characters (each piece decodes
    on its own) so that each line stays under the reply limit."""
    for start in range(0, len(text), _B64_RUNNER_CHUNK):
        await stream.send(kind, text[start:start + _B64_RUNNER_CHUNK])


# --- one command ----------------------------------------------------------------------
async def command(channel: AgentChannel, params: dict[str, Any]) -> Any:
    _only(params, "command", "arguments", "agent_timeout")
    name = params.get("command")
    if not isinstance(name, str) or not name:
        raise UsageError("parameter 'command' must be a guest agent command name")
    if name in REFUSED_COMMANDS:
        raise UsageError(f"{name} belongs to the runner (it keeps the channel in step)")
    arguments = params.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise UsageError("parameter 'arguments' must be an object")
    return await channel.request(name, arguments or None, timeout=_agent_timeout(params))


# --- exec -----------------------------------------------------------------------------
async def exec_stream(channel: AgentChannel, params: dict[str, Any], stream: Stream,
                      ) -> dict[str, Any]:
    """params: ``path``, ``arg`` (list), ``env`` (list of ``K=V``: the command's whole
    environment, as guest-exec takes it), ``input`` (whether stdin follows as data
    messages and ``end``), ``capture`` (default true), ``timeout``, ``agent_timeout``.

    Messages: ``ready`` (send stdin now), ``started`` ``{"pid"}``, ``running`` every
    ``AGENT_EXEC_HEARTBEAT_S`` while it runs, ``stdout`` and ``stderr`` (base64) after
    the exit; result: ``pid``, ``exitcode`` or ``signal``, ``stdout_truncated``,
    ``stderr_truncated``, ``seconds``.
    """
    _only(params, "path", "arg", "env", "input", "capture", "timeout", "agent_timeout")
    path = params.get("path")
    if not isinstance(path, str) or not path:
        raise UsageError("parameter 'path' must be the program to run")
    args = _string_list(params, "arg") or []
    env = _string_list(params, "env")
    capture = params.get("capture", True)
    wants_input = params.get("input", False)
    if not isinstance(capture, bool) or not isinstance(wants_input, bool):
        raise UsageError("parameters 'capture' and 'input' must be booleans")
    timeout = _timeout(params, "timeout", None)
    agent_timeout = _agent_timeout(params)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    arguments: dict[str, Any] = {"path": path, "arg": args, "capture-output": capture}
    if env is not None:
        arguments["env"] = env
    if wants_input:
        await stream.send("ready")
        stdin = await _receive_all(stream, C.AGENT_EXEC_MAX_INPUT, "stdin")
        if stdin is None:
            return {}  # hung up before the command started: nothing ran
        if stdin:
            arguments["input-data"] = base64.b64encode(stdin).decode()
    started = time.monotonic()
    try:
        epoch = channel.epoch
        pid = (await channel.request("guest-exec", arguments, timeout=agent_timeout))["pid"]
        await stream.send("started", {"pid": pid})
        status = await _unless_hung_up(stream, _wait_exit(
            channel, pid, epoch, deadline, agent_timeout, path,
            beat=lambda: stream.send("running")))
    except _HungUp:
        return {}
    result: dict[str, Any] = {"pid": pid, "exitcode": status.get("exitcode"),
                              "signal": status.get("signal"),
                              "stdout_truncated": bool(status.get("out-truncated")),
                              "stderr_truncated": bool(status.get("err-truncated")),
                              "seconds": round(time.monotonic() - started, 3)}
    await _send_b64(stream, "stdout", status.get("out-data") or "")
    await _send_b64(stream, "stderr", status.get("err-data") or "")
    return result


async def _wait_exit(channel: AgentChannel, pid: int, epoch: int, deadline: float | None,
                     agent_timeout: float, path: str,
                     beat: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """Ask ``guest-exec-status`` until the process exited (a growing pause between asks:
    qemu-ga reports an exit only when asked); ``beat()`` every ``AGENT_EXEC_HEARTBEAT_S``."""
    loop = asyncio.get_running_loop()
    pause = C.AGENT_EXEC_POLL_FIRST_S
    slow_from = loop.time() + C.AGENT_EXEC_POLL_SLOW_AFTER_S
    next_beat = loop.time() + C.AGENT_EXEC_HEARTBEAT_S
    while True:
        if loop.time() >= next_beat:
            await beat()
            next_beat = loop.time() + C.AGENT_EXEC_HEARTBEAT_S
        if channel.epoch != epoch:
            raise AgentUnavailable(
                f"the guest agent restarted while {path} (pid {pid}) ran (qemu-ga stopped, "
                "or the guest rebooted): its exit status and output are lost")
        try:
            status = await channel.request("guest-exec-status", {"pid": pid},
                                           timeout=agent_timeout)
        except AgentCommandError:
            if channel.epoch != epoch:
                continue  # the new agent never heard of the pid: say why, above
            raise
        if status.get("exited"):
            return dict(status)
        if deadline is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise OperationTimeout(
                    f"{path} still runs in the guest (pid {pid}) after the timeout",
                    hint=f"it goes on there; end it (maqet exec VM -- kill {pid}) or "
                         "pass a longer timeout")
            pause = min(pause, remaining)
        await asyncio.sleep(pause)
        longest = C.AGENT_EXEC_POLL_MAX_S if loop.time() < slow_from else C.AGENT_EXEC_POLL_SLOW_S
        pause = min(pause * C.AGENT_EXEC_POLL_GROWTH, longest)


async def _receive_all(stream: Stream, limit: int, what: str) -> bytes | None:
    """Data messages up to ``end`` (None: the client hung up first)."""
    data = bytearray()
    while (message := await stream.receive()) is not None:
        kind, value = message
        if kind == "end":
            return bytes(data)
        data += _decode(kind, value)
        if len(data) > limit:
            raise UsageError(f"{what} is larger than {limit} bytes", hint="the guest agent "
                             "takes it in one message; copy a file in with maqet cp instead")
    return None


def _decode(kind: str, value: Any) -> bytes:
    if kind != "data" or not isinstance(value, str):
        raise ProtocolError(f"unexpected stream message {kind!r}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as err:
        raise ProtocolError(f"stream data is not base64: {err}") from err


# --- files --------------------------------------------------------------------------------
async def _open(channel: AgentChannel, path: str, mode: str, agent_timeout: float) -> int:
    return int(await channel.request("guest-file-open", {"path": path, "mode": mode},
                                     timeout=agent_timeout))


async def _close(channel: AgentChannel, handle: int, agent_timeout: float) -> None:
    await channel.request("guest-file-close", {"handle": handle}, timeout=agent_timeout)


async def file_write_stream(channel: AgentChannel, params: dict[str, Any], stream: Stream,
                            ) -> dict[str, Any]:
    """params: ``path`` (created or truncated), ``agent_timeout``. Messages: ``ready``
    (send now), then the client's data and ``end``. Result: ``size``."""
    _only(params, "path", "agent_timeout")
    path = _guest_path(params)
    agent_timeout = _agent_timeout(params)
    handle = await _open(channel, path, C.AGENT_FILE_MODE_WRITE, agent_timeout)
    size = 0
    try:
        await stream.send("ready")
        pending = bytearray()
        while True:
            message = await stream.receive()
            if message is None:
                raise _HungUp
            kind, value = message
            if kind == "end":
                break
            pending += _decode(kind, value)
            while len(pending) >= C.AGENT_FILE_CHUNK:
                await _write(channel, handle, pending[:C.AGENT_FILE_CHUNK], agent_timeout)
                size += C.AGENT_FILE_CHUNK
                del pending[:C.AGENT_FILE_CHUNK]
        if pending:
            await _write(channel, handle, pending, agent_timeout)
            size += len(pending)
    except _HungUp:
        return {}
    finally:
        with contextlib.suppress(MaqetError):
            await _close(channel, handle, agent_timeout)
    return {"size": size}


async def _write(channel: AgentChannel, handle: int, data: bytearray | bytes,
                 agent_timeout: float) -> None:
    view = memoryview(data)
    while view:
        reply = await channel.request(
            "guest-file-write", {"handle": handle, "buf-b64": base64.b64encode(view).decode()},
            timeout=agent_timeout)
        count = int(reply.get("count", 0))
        if count <= 0:
            raise AgentCommandError("guest-file-write", "ShortWrite",
                                    f"wrote {count} of {len(view)} bytes")
        view = view[count:]


async def file_read_stream(channel: AgentChannel, params: dict[str, Any], stream: Stream,
                           ) -> dict[str, Any]:
    """params: ``path``, ``agent_timeout``. Messages: ``ready``, then ``data`` (base64)
    to the end of the file. Result: ``size``."""
    _only(params, "path", "agent_timeout")
    path = _guest_path(params)
    agent_timeout = _agent_timeout(params)
    handle = await _open(channel, path, C.AGENT_FILE_MODE_READ, agent_timeout)
    size = 0
    try:
        await stream.send("ready")
        while True:
            reply = await channel.request("guest-file-read",
                                          {"handle": handle, "count": C.AGENT_FILE_CHUNK},
                                          timeout=agent_timeout)
            count = int(reply.get("count", 0))
            size += count
            if count:
                await _send_b64(stream, "data", str(reply.get("buf-b64", "")))
            if reply.get("eof") or not count:
                break
    except (ConnectionError, OSError):  # the client hung up: nobody to answer
        return {}
    finally:
        with contextlib.suppress(MaqetError):
            await _close(channel, handle, agent_timeout)
    return {"size": size}
