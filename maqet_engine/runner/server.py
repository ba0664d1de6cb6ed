"""The control socket: accepts clients of the same uid (SO_PEERCRED), reads one
request per line and answers each, in order. Nothing a client sends can end the
runner, stall its event loop, or make it hold memory or fds beyond these bounds
(values in ``constants.py``, the table in docs/runner.md):

- the listen backlog is the system's maximum (``somaxconn``): a burst of connections
  waits in the kernel instead of being refused;
- at most ``IPC_MAX_CLIENTS`` connections are served at once; one more gets a
  ``RunnerBusy`` error reply and is closed without being read (its request never ran,
  so the sync client sends it again);
- a request line is at most ``IPC_MAX_REQUEST_BYTES`` (the stream reader stops reading
  the socket beyond that); an overlong or unterminated line gets an error reply and
  ends that connection;
- a malformed request (bad JSON, too deep, a bad id...) gets an error reply and the
  connection stays usable; runner.log gets one WARNING line for it (the bytes at DEBUG,
  never a traceback), at most ``IPC_WARNINGS_PER_MINUTE`` such lines a minute;
- a request may carry the caller's operation id (``op``): the request is handled under
  it (:mod:`maqet_engine.ops`);
- while a request runs, the connection's next line is read ahead: a client that hangs
  up (closes; a half-close still gets its replies) has its pending wait
  (:data:`CANCEL_ON_HANGUP`) cancelled at once, which frees the connection's fd;
- a *stream* request (the handlers name them) gets the connection itself as a
  :class:`Stream` until its reply, which ends the connection: its messages obey the same
  line limits, and its handler sees the client hang up (:meth:`Stream.receive` returns
  None) and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine import ops
from maqet_engine.errors import HostError, MaqetError
from maqet_engine.ipc import protocol


class Stream:
    """The connection of one stream request, between the request and its reply: the
    handler sends ``{kind: value}`` messages and receives the client's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 peer_pid: int = 0) -> None:
        self._reader = reader
        self._writer = writer
        self.peer_pid = peer_pid  # the client's pid (SO_PEERCRED), for messages

    async def send(self, kind: str, value: Any = True) -> None:
        """One message to the client (waits while the client is slow to read)."""
        self._writer.write(protocol.encode_stream(kind, value))
        await self._writer.drain()

    async def receive(self) -> tuple[str, Any] | None:
        """The client's next message; None when it hung up (or closed its sending side).

        :raise ProtocolError: a malformed or oversized message.
        """
        item = await ControlServer._read(self._reader)
        if item is None:
            return None
        if isinstance(item, protocol.ProtocolError):
            raise item
        return protocol.decode_stream(item)

    async def hung_up(self) -> None:
        """Return when the client hangs up; a message it sends meanwhile is refused."""
        while (message := await self.receive()) is not None:
            raise protocol.ProtocolError(f"unexpected stream message {message[0]!r}")


Dispatch = Callable[[protocol.Request, "Stream | None"], Awaitable[Any]]

# Requests that only wait (no side effect to leave half done): cancelled as soon as their
# client hangs up. Others (a stop ladder, a snapshot job) run to their end, bounded by
# their own timeouts, and their reply goes nowhere.
CANCEL_ON_HANGUP = frozenset({"serial_wait"})


def listen_backlog() -> int:
    """The system's maximum listen backlog (larger values are cut to it by the kernel)."""
    try:
        with open(C.SOMAXCONN_FILE, "rb") as fh:
            value = int(fh.read(32))
    except (OSError, ValueError):
        return socket.SOMAXCONN
    return value if value > 0 else socket.SOMAXCONN


class _Warnings:
    """WARNING lines about misbehaving clients, at most ``IPC_WARNINGS_PER_MINUTE`` a
    minute; the next line logged says how many were left out."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._window = -60.0
        self._count = 0
        self._dropped = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window >= 60.0:
            self._window, self._count = now, 0
        if self._count >= C.IPC_WARNINGS_PER_MINUTE:
            self._dropped += 1
            return
        self._count += 1
        if self._dropped:
            message += " (%d more such warnings left out)"
            args = (*args, self._dropped)
            self._dropped = 0
        self._log.warning(message, *args)


class ControlServer:
    def __init__(self, path: Path, dispatch: Dispatch, log: logging.Logger, *,
                 streams: frozenset[str] = frozenset()) -> None:
        """``streams``: the methods whose requests get the connection as a :class:`Stream`."""
        self.path = path
        self._dispatch = dispatch
        self._streams = streams
        self._log = log
        self._warnings = _Warnings(log)
        self._server: asyncio.Server | None = None
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._clients: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._client, path=str(self.path), limit=C.IPC_MAX_REQUEST_BYTES,
            backlog=listen_backlog(),
        )
        os.chmod(self.path, 0o600)

    async def close(self, grace: float) -> None:
        """Stop accepting; give requests being answered ``grace`` seconds to finish."""
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)

    async def disconnect_clients(self, grace: float) -> None:
        """Close every client connection (they see EOF) and let their tasks end."""
        for writer in self._clients.values():
            writer.close()
        if self._clients:
            tasks = list(self._clients)
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()

    # --- one connection ---------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= C.IPC_MAX_CLIENTS:
            self._refuse(writer)
            return
        task = asyncio.current_task()
        if task is not None:
            self._clients[task] = writer
        pid = 0
        try:
            pid, uid = self._peer(writer)
            if uid not in (os.getuid(), 0):
                error = HostError("permission denied: the runner serves its own user only")
                await self._send(writer, protocol.encode_error(None, error))
                return
            await self._serve(reader, writer, pid)
        except (ConnectionError, OSError) as err:
            self._log.debug("client pid %s went away: %s", pid, err)
        except Exception as err:  # a bug in this module: one line, never the runner's end
            self._log.error("client pid %s: connection failed: %s: %s", pid,
                            type(err).__name__, err)
            self._log.debug("client pid %s: traceback", pid, exc_info=True)
        finally:
            if task is not None:
                self._clients.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """Answer RunnerBusy without reading anything, and close (no await: cheap)."""
        self._warnings.warn("refused a client: %d connections open (IPC_MAX_CLIENTS)",
                            len(self._clients))
        error = protocol.RunnerBusy(
            f"the runner serves {C.IPC_MAX_CLIENTS} connections already",
            hint="try again: this request was not run")
        with contextlib.suppress(Exception):
            writer.write(protocol.encode_error(None, error))
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     pid: int) -> None:
        ahead: asyncio.Task[bytes | protocol.ProtocolError | None] | None = None
        try:
            while True:
                if ahead is not None:
                    item, ahead = await ahead, None
                else:
                    item = await self._read(reader)
                if item is None:
                    return
                if isinstance(item, protocol.ProtocolError):  # framing: answer, then close
                    self._warnings.warn("client pid %s: %s", pid, item)
                    await self._send(writer, self._error(None, item))
                    return
                if not item.strip():
                    continue
                try:
                    request = protocol.decode_request(item)
                except protocol.ProtocolError as err:
                    self._warnings.warn("client pid %s: malformed request: %s", pid, err)
                    self._log.debug("client pid %s: the malformed request: %r", pid,
                                    item[:200])
                    await self._send(writer, self._error(err.request_id, err))
                    continue
                if request.method in self._streams:  # its reply ends the connection
                    stream = Stream(reader, writer, peer_pid=pid)
                    await self._send(writer, await self._answer(request, stream))
                    return
                if request.method not in CANCEL_ON_HANGUP:
                    await self._send(writer, await self._answer(request))
                    continue
                ahead = asyncio.create_task(self._read(reader))
                reply = await self._answer_unless_hung_up(request, ahead, writer)
                if reply is None:
                    self._log.info("client pid %s hung up: cancelled its %s (id %r)", pid,
                                   request.method, request.id)
                    return
                await self._send(writer, reply)
        finally:
            if ahead is not None:
                ahead.cancel()

    async def _answer_unless_hung_up(self, request: protocol.Request,
                                     ahead: asyncio.Task[Any], writer: asyncio.StreamWriter,
                                     ) -> bytes | None:
        """Answer a wait while ``ahead`` reads the connection's next line; if that read
        ends in a hang-up first, cancel the wait, close, and return None. (The wait runs
        in this task, and the read's callback cancels it: cheaper than a second task.)"""
        task = asyncio.current_task()
        assert task is not None
        waiting, hung_up = True, False

        def watch(read: asyncio.Task[Any]) -> None:
            nonlocal hung_up
            if (waiting and not read.cancelled() and read.result() is None
                    and self._hung_up(writer)):
                hung_up = True
                task.cancel()

        ahead.add_done_callback(watch)
        try:
            return await self._answer(request)
        except asyncio.CancelledError:
            if not hung_up or task.uncancel() > 0:  # (also) cancelled from outside
                raise
        finally:
            waiting = False  # a callback already scheduled must not cancel what follows
            ahead.remove_done_callback(watch)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return None

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> bytes | protocol.ProtocolError | None:
        """The next line; None at EOF (or a broken connection); a ProtocolError when the
        framing is broken and the connection must end."""
        try:
            return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as err:
            if not err.partial.strip():
                return None
            return protocol.ProtocolError("message not terminated by a newline")
        except asyncio.LimitOverrunError:
            return protocol.ProtocolError(
                f"message exceeds the IPC limit of {C.IPC_MAX_REQUEST_BYTES} bytes")
        except (ConnectionError, OSError):
            return None

    async def _answer(self, request: protocol.Request, stream: Stream | None = None) -> bytes:
        """The reply line to one valid request (errors included). While it is handled,
        this task serves the request's operation (:mod:`maqet_engine.ops`): its log
        lines and the events it causes carry the op id; tasks it starts inherit it."""
        self._busy += 1
        self._idle.clear()
        token = ops.current.set(request.op)
        try:
            result = await self._dispatch(request, stream)
            return protocol.encode_result(request.id, result)
        except MaqetError as err:
            return self._error(request.id, err)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug in a handler: answer, log, keep serving
            self._log.error("%s failed: %s: %s", request.method, type(err).__name__, err)
            self._log.debug("%s failed: traceback", request.method, exc_info=True)
            return self._error(request.id, MaqetError(
                f"internal runner error: {type(err).__name__}: {err}",
                hint="see the runner log"))
        finally:
            ops.current.reset(token)
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    @staticmethod
    def _error(request_id: int | str | None, error: MaqetError) -> bytes:
        try:
            return protocol.encode_error(request_id, error)
        except MaqetError:  # cannot happen with a clipped message; never go unanswered
            return protocol.encode_error(None, MaqetError(type(error).__name__))

    @staticmethod
    def _hung_up(writer: asyncio.StreamWriter) -> bool:
        """Whether the peer closed its end (POLLHUP), not merely shut down writing."""
        sock = writer.get_extra_info("socket")
        if writer.is_closing() or sock is None or sock.fileno() < 0:
            return True
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return any(events & (select.POLLHUP | select.POLLERR)
                   for _fd, events in poller.poll(0))

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
        if data:
            writer.write(data)
            await writer.drain()

    @staticmethod
    def _peer(writer: asyncio.StreamWriter) -> tuple[int, int]:
        """(pid, uid) of the client; uid -1 when it cannot be told."""
        sock: socket.socket | None = writer.get_extra_info("socket")
        if sock is None:
            return 0, -1
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        return pid, uid
