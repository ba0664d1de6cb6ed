"""``maqet console``: clients attached to the serial console through the runner, which
owns the console's one socket (QEMU takes one client; the drain is :mod:`.serial`).

Each attached client is a *viewer*: it gets every console byte from its attachment on
(a listener of the serial drain), as ``{"data": base64}`` stream messages. At most one
viewer at a time also *types*: what it sends (``{"data": base64}``) goes to the guest's
UART. A viewer that asks to type while another one does is attached read-only, and is
told who types (``{"ready": {"write": false, "writer_pid": N}}``).

A slow viewer cannot make the runner hold the console without bound: one that falls
``CONSOLE_VIEWER_BACKLOG`` bytes behind is detached with an error. A viewer ends by
hanging up (the CLI's Ctrl-]); all end when the console closes (QEMU exited).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import RuntimeFailure, UsageError
from maqet_engine.ipc.protocol import ProtocolError
from maqet_engine.runner.serial import SerialDrain
from maqet_engine.runner.server import Stream


class _Viewer:
    """The bytes one viewer has not been sent yet (bounded)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.closed = False
        self.overflowed = False
        self.ready = asyncio.Event()

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            self.closed = True
        elif self.size + len(chunk) > C.CONSOLE_VIEWER_BACKLOG:
            self.overflowed = True
        else:
            self.chunks.append(chunk)
            self.size += len(chunk)
        self.ready.set()

    async def take(self) -> bytes | None:
        """What arrived since the last call (None: the console closed)."""
        while not self.chunks:
            if self.closed:
                return None
            if self.overflowed:
                raise RuntimeFailure(f"this console viewer fell more than "
                                     f"{C.CONSOLE_VIEWER_BACKLOG} bytes behind; detached")
            self.ready.clear()
            await self.ready.wait()
        if self.overflowed:
            raise RuntimeFailure(f"this console viewer fell more than "
                                 f"{C.CONSOLE_VIEWER_BACKLOG} bytes behind; detached")
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.size = 0
        return data


class ConsoleHub:
    """The viewers of one VM's console."""

    def __init__(self, serial: SerialDrain) -> None:
        self._serial = serial
        self._writer_pid: int | None = None

    async def attach(self, params: dict[str, Any], stream: Stream) -> dict[str, Any]:
        """Serve one viewer until it hangs up or the console closes; the result says why
        it ended."""
        write = params.get("write", True)
        if not isinstance(write, bool):
            raise UsageError("parameter 'write' has the wrong type")
        writes = write and self._writer_pid is None
        if writes:
            self._writer_pid = stream.peer_pid
        viewer = _Viewer()
        self._serial.add_listener(viewer.feed)
        try:
            await stream.send("ready", {"write": writes, "writer_pid": self._writer_pid})
            sending = asyncio.ensure_future(self._send_output(viewer, stream))
            typing = asyncio.ensure_future(self._take_input(stream, writes))
            try:
                done, _ = await asyncio.wait({sending, typing},
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sending, typing):
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            return next(iter(done)).result()
        finally:
            self._serial.remove_listener(viewer.feed)
            if writes:
                self._writer_pid = None

    @staticmethod
    async def _send_output(viewer: _Viewer, stream: Stream) -> dict[str, Any]:
        while (data := await viewer.take()) is not None:
            for start in range(0, len(data), C.IPC_STREAM_RUNNER_CHUNK):
                piece = data[start:start + C.IPC_STREAM_RUNNER_CHUNK]
                await stream.send("data", base64.b64encode(piece).decode())
        return {"reason": "the console closed (QEMU exited)"}

    async def _take_input(self, stream: Stream, writes: bool) -> dict[str, Any]:
        while (message := await stream.receive()) is not None:
            kind, value = message
            if kind != "data" or not isinstance(value, str):
                raise ProtocolError(f"unexpected console message {kind!r}")
            if not writes:
                continue  # a read-only viewer's keys go nowhere
            try:
                data = base64.b64decode(value, validate=True)
            except binascii.Error as err:
                raise UsageError(f"console data is not base64: {err}") from err
            await self._serial.write(data)
        return {"reason": "detached"}
