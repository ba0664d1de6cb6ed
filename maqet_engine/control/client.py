"""Synchronous client of a runner's control socket (plain sockets, no asyncio, so
``maqet qmp`` stays fast).

It never hangs: connecting, sending and reading each run against a deadline, and a reply
line is at most ``IPC_MAX_MESSAGE_BYTES`` (a longer one is a ProtocolError). After a
timeout or a broken reply the connection is closed (a late reply would be taken for
the next one); later calls on it raise RunnerUnavailable.

Connecting is bounded by ``IPC_CONNECT_TIMEOUT_S`` (or the client's timeout, if
shorter) and survives a burst of clients (Ansible forks):

- a full listen backlog: the connect waits in the kernel (``SO_SNDTIMEO``) until the
  runner accepts, instead of failing with EAGAIN (RunnerUnavailable "timed out" when it
  never does);
- ECONNREFUSED while the socket file exists (a runner between bind and listen, or
  going away): tried again until the deadline; no socket file fails at once;
- a runner at its connection cap answers ``RunnerBusy`` without reading the request:
  the request is sent again on a new connection, until the call's own deadline.

Retries pause ``IPC_RETRY_FIRST_S``, doubling up to ``IPC_RETRY_MAX_S`` (with jitter).
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine import ops
from maqet_engine.errors import OperationTimeout, RunnerUnavailable
from maqet_engine.ipc import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ids = itertools.count(1)


def _pause(pause: float, deadline: float) -> float:
    """Sleep ``pause`` (with jitter), at most until ``deadline``, before one more try:
    the next pause, or 0.0 when the deadline has passed (no more tries)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return 0.0
    time.sleep(min(pause * (0.5 + (time.monotonic_ns() % 1024) / 1024), remaining))
    return min(pause * 2, C.IPC_RETRY_MAX_S)


class RunnerClient:
    """One connection to one runner; requests are answered in order."""

    def __init__(self, socket_path: Path, *, timeout: float = C.IPC_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._fresh = True  # nothing sent yet: a RunnerBusy reply may be retried
        self._connect(time.monotonic() + min(timeout, C.IPC_CONNECT_TIMEOUT_S))

    def _connect(self, deadline: float) -> None:
        pause = C.IPC_RETRY_FIRST_S
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                # Blocking connect: with the backlog full, the kernel queues us until the
                # runner accepts or SO_SNDTIMEO passes (then EAGAIN).
                wait = max(deadline - time.monotonic(), 0.001)
                seconds = int(wait)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                struct.pack("ll", seconds, int((wait - seconds) * 1e6) or 1))
                sock.connect(os.fsencode(self.socket_path))
            except FileNotFoundError as err:
                sock.close()
                raise RunnerUnavailable(
                    f"no runner listens on {self.socket_path}",
                    hint="the VM is not running: start it",
                ) from err
            except ConnectionRefusedError as err:
                sock.close()
                if os.path.exists(self.socket_path):
                    pause = _pause(pause, deadline)
                    if pause:
                        continue
                raise RunnerUnavailable(
                    f"no runner listens on {self.socket_path}",
                    hint="the VM is not running: start it",
                ) from err
            except BlockingIOError as err:  # EAGAIN: still no room after the wait
                sock.close()
                # RunnerUnavailable saying "timed out": a runner that listens but never
                # accepts is how lifecycle's forced stop recognises a hung one.
                raise RunnerUnavailable(
                    f"the runner at {self.socket_path} did not accept a connection: timed "
                    f"out after {min(self.timeout, C.IPC_CONNECT_TIMEOUT_S):g} s (its listen "
                    "backlog is full)") from err
            except OSError as err:
                sock.close()
                raise RunnerUnavailable(
                    f"cannot connect to the runner at {self.socket_path}: {err}") from err
            self._sock = sock
            self._buffer.clear()
            self._fresh = True
            return

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> RunnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, *, ipc_timeout: float | None = None, **params: Any) -> Any:
        """Send one request and return its result, or raise the error the runner sent.
        ``ipc_timeout`` bounds the whole call, retries included (params may have their
        own timeout). A request over ``IPC_MAX_REQUEST_BYTES`` is refused here. The
        request carries the operation id this thread serves (:mod:`maqet_engine.ops`)."""
        request_id = next(_ids)
        deadline = time.monotonic() + (self.timeout if ipc_timeout is None else ipc_timeout)
        data = protocol.encode_request(request_id, method, params, op=ops.current_op())
        pause = C.IPC_RETRY_FIRST_S
        while True:
            fresh, self._fresh = self._fresh, False
            try:
                return protocol.decode_reply(self._exchange(data, deadline, method), request_id)
            except protocol.RunnerBusy:
                self.close()  # the runner closed it, unread: safe to send again
                if not fresh:
                    raise
                pause = _pause(pause, deadline)
                if not pause or time.monotonic() >= deadline:  # no time left for a reply
                    raise
                self._connect(min(deadline, time.monotonic() + C.IPC_CONNECT_TIMEOUT_S))
            except protocol.ProtocolError:
                self.close()  # a broken reply: the stream is out of step
                raise

    def _exchange(self, data: bytes, deadline: float, method: str) -> bytes:
        sock = self._sock
        if sock is None:
            raise RunnerUnavailable("the connection to the runner was closed after an "
                                    "earlier failure", hint="open a new RunnerClient")
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the runner, maybe with a reply (RunnerBusy): read it below
        except TimeoutError as err:
            self.close()
            raise OperationTimeout(f"the runner did not take the {method} request in time",
                                   ) from err
        return self._readline(deadline, method)

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the runner closes the connection (it does so when it exits)."""
        if self._sock is None:
            return True
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
        """The next reply line, at most ``IPC_MAX_MESSAGE_BYTES``, by ``deadline``."""
        limit = C.IPC_MAX_MESSAGE_BYTES
        while True:
            end = self._buffer.find(b"\n")
            if end > limit or (end < 0 and len(self._buffer) > limit):
                self.close()
                raise protocol.ProtocolError(
                    f"the runner's reply to {method} exceeds the IPC limit of {limit} bytes")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                return line
            remaining = deadline - time.monotonic()
            sock = self._sock
            if remaining <= 0 or sock is None:
                self.close()
                raise OperationTimeout(f"the runner did not answer {method} in time")
            try:
                sock.settimeout(remaining)
                chunk = sock.recv(C.SERIAL_READ_CHUNK)
            except TimeoutError as err:
                self.close()
                raise OperationTimeout(f"the runner did not answer {method} in time") from err
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.close()
                raise RunnerUnavailable(
                    f"the runner closed the connection before answering {method}",
                    hint="see the VM's runner log (runner.log in its directory)",
                )
            self._buffer += chunk


class StreamCall:
    """One stream request on its own connection (docs/runner.md, "Streams"): messages
    in both directions until the runner's reply, which :meth:`receive` returns as
    ``("result", value)`` (or raises, for an error reply). Every wait has a deadline."""

    def __init__(self, client: RunnerClient, method: str, request_id: int) -> None:
        self._client = client
        self.method = method
        self._id = request_id
        self.done = False

    def fileno(self) -> int:
        """The connection's fd, for ``select``/``poll`` (a line may already be buffered:
        check :meth:`pending` first)."""
        sock = self._client._sock  # noqa: SLF001 - the client is this call's own
        if sock is None:
            raise RunnerUnavailable("the stream's connection is closed")
        return sock.fileno()

    def pending(self) -> bool:
        """Whether a whole message is buffered already (receive() will not block)."""
        return b"\n" in self._client._buffer  # noqa: SLF001

    def send(self, kind: str, value: Any = True, *, timeout: float = C.IPC_TIMEOUT_S) -> None:
        """One message to the runner. When the runner ended the stream meanwhile (its
        error reply is waiting), that reply is raised."""
        data = protocol.encode_stream(kind, value, limit=C.IPC_MAX_REQUEST_BYTES)
        sock = self._client._sock  # noqa: SLF001
        if sock is None:
            raise RunnerUnavailable("the stream's connection is closed")
        try:
            sock.settimeout(timeout)
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            kind, value = self.receive(timeout)  # the runner's last word: its error
            raise RunnerUnavailable(f"the runner ended {self.method} early: {value!r}") \
                from None
        except TimeoutError as err:
            self._client.close()
            raise OperationTimeout(f"the runner did not take {self.method} data in time") \
                from err

    def receive(self, timeout: float | None = C.IPC_TIMEOUT_S) -> tuple[str, Any]:
        """The runner's next message ``(kind, value)``, or ``("result", value)`` at the
        end; an error reply is raised. ``timeout`` None waits as long as it takes."""
        deadline = time.monotonic() + (timeout if timeout is not None else 10 ** 9)
        line = self._client._readline(deadline, self.method)  # noqa: SLF001
        try:
            kind, value = protocol.decode_stream_reply(line, self._id)
        except BaseException:
            self.done = True
            self._client.close()
            raise
        if kind == "result":
            self.done = True
            self._client.close()
        return kind, value

    def close(self) -> None:
        """Hang up (the runner stops the request)."""
        self.done = True
        self._client.close()

    def __enter__(self) -> StreamCall:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream(socket_path: Path, method: str, *, connect_timeout: float = C.IPC_CONNECT_TIMEOUT_S,
           **params: Any) -> StreamCall:
    """Open a connection and send a stream request on it (no reply read yet)."""
    client = RunnerClient(socket_path, timeout=connect_timeout)
    request_id = next(_ids)
    data = protocol.encode_request(request_id, method, params, op=ops.current_op())
    try:
        assert client._sock is not None  # noqa: SLF001
        client._sock.settimeout(connect_timeout)  # noqa: SLF001
        client._sock.sendall(data)  # noqa: SLF001
    except OSError as err:
        client.close()
        raise RunnerUnavailable(f"cannot send {method} to the runner: {err}") from err
    return StreamCall(client, method, request_id)


def call(socket_path: Path, method: str, *, ipc_timeout: float = C.IPC_TIMEOUT_S,
         **params: Any) -> Any:
    """One request on a fresh connection."""
    with RunnerClient(socket_path, timeout=ipc_timeout) as client:
        return client.call(method, **params)
