"""The control socket: accepts clients of the same uid (SO_PEERCRED), reads one
request per line, answers each. Bad input gets an error reply; only an oversized or
unterminated message closes that one connection. Nothing a client sends can end the
runner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import HostError, MaqetError
from maqet_engine.ipc import protocol

Dispatch = Callable[[protocol.Request], Awaitable[Any]]


class ControlServer:
    def __init__(self, path: Path, dispatch: Dispatch, log: logging.Logger) -> None:
        self.path = path
        self._dispatch = dispatch
        self._log = log
        self._server: asyncio.Server | None = None
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._clients: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._client, path=str(self.path), limit=C.IPC_MAX_MESSAGE_BYTES,
            backlog=C.IPC_BACKLOG,
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
            await asyncio.wait(list(self._clients), timeout=grace)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients[task] = writer
        try:
            if not self._peer_allowed(writer):
                error = HostError("permission denied: the runner serves its own user only")
                await self._send(writer, protocol.encode_error(None, error))
                return
            while not reader.at_eof():
                reply, fatal = await self._one(reader)
                if reply is None:
                    break
                await self._send(writer, reply)
                if fatal:
                    break
        except (ConnectionError, OSError) as err:
            self._log.debug("client went away: %s", err)
        finally:
            if task is not None:
                self._clients.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader) -> tuple[bytes | None, bool]:
        """Read and answer one request: (reply, close connection after it)."""
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as err:
            if not err.partial.strip():
                return None, True
            return protocol.encode_error(None, protocol.ProtocolError(
                "message not terminated by a newline")), True
        except asyncio.LimitOverrunError:
            return protocol.encode_error(None, protocol.ProtocolError(
                f"message exceeds the IPC limit of {C.IPC_MAX_MESSAGE_BYTES} bytes")), True
        if not line.strip():
            return b"", False
        request_id = protocol.request_id_of(line)
        self._busy += 1
        self._idle.clear()
        try:
            request = protocol.decode_request(line)
            result = await self._dispatch(request)
            try:
                return protocol.encode_result(request.id, result), False
            except (TypeError, ValueError) as err:
                raise MaqetError(f"result of {request.method} is not JSON: {err}") from err
        except MaqetError as err:
            return protocol.encode_error(request_id, err), False
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug in a handler: answer, log, keep serving
            self._log.exception("request failed")
            return protocol.encode_error(request_id, MaqetError(
                f"internal runner error: {type(err).__name__}: {err}",
                hint="see the runner log")), False
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
        if data:
            writer.write(data)
            await writer.drain()

    @staticmethod
    def _peer_allowed(writer: asyncio.StreamWriter) -> bool:
        sock: socket.socket | None = writer.get_extra_info("socket")
        if sock is None:
            return False
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in (os.getuid(), 0)
