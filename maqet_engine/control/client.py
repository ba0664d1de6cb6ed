"""Synchronous client of a runner's control socket (plain sockets, no asyncio, so
``maqet qmp`` stays fast)."""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import OperationTimeout, RunnerUnavailable
from maqet_engine.ipc import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ids = itertools.count(1)


class RunnerClient:
    """One connection to one runner; requests are answered in order."""

    def __init__(self, socket_path: Path, *, timeout: float = C.IPC_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._buffer = b""
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(os.fsencode(socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            self._sock.close()
            raise RunnerUnavailable(
                f"no runner listens on {socket_path}",
                hint="the VM is not running (start it with 'maqet start')",
            ) from err
        except OSError as err:
            self._sock.close()
            raise RunnerUnavailable(
                f"cannot connect to the runner at {socket_path}: {err}") from err

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RunnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, *, ipc_timeout: float | None = None, **params: Any) -> Any:
        """Send one request and return its result, or raise the error the runner sent.
        ``ipc_timeout`` bounds the wait for the reply (params may have their own timeout)."""
        request_id = next(_ids)
        deadline = time.monotonic() + (self.timeout if ipc_timeout is None else ipc_timeout)
        try:
            self._sock.settimeout(max(0.001, deadline - time.monotonic()))
            self._sock.sendall(protocol.encode_request(request_id, method, params))
            line = self._readline(deadline, method)
        except (BrokenPipeError, ConnectionResetError) as err:
            raise RunnerUnavailable(f"the runner closed the connection during {method}") from err
        return protocol.decode_reply(line, request_id)

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the runner closes the connection (it does so when it exits)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._sock.settimeout(remaining)
                if not self._sock.recv(C.SERIAL_READ_CHUNK):
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True

    def _readline(self, deadline: float, method: str) -> bytes:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationTimeout(f"the runner did not answer {method} in time")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(C.SERIAL_READ_CHUNK)
            except TimeoutError as err:
                raise OperationTimeout(f"the runner did not answer {method} in time") from err
            if not chunk:
                raise RunnerUnavailable(
                    f"the runner exited before answering {method}",
                    hint="see 'maqet logs NAME --runner'",
                )
            self._buffer += chunk
            if len(self._buffer) > C.IPC_MAX_MESSAGE_BYTES:
                raise protocol.ProtocolError("reply exceeds the IPC size limit")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


def call(socket_path: Path, method: str, *, ipc_timeout: float = C.IPC_TIMEOUT_S,
         **params: Any) -> Any:
    """One request on a fresh connection."""
    with RunnerClient(socket_path, timeout=ipc_timeout) as client:
        return client.call(method, **params)
