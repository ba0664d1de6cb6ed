"""Drains the VM's serial socket for the runner's whole life.

QEMU writes the UART into the socket byte by byte; nobody reading stalls the guest.
QEMU's own ``logfile=`` records the console in ``serial.log``; the runner keeps the
recent text in memory so clients can wait for output (``serial_wait``) without a
second reader on the socket (QEMU accepts only one) and without polling the file.

Offsets count characters received since this runner connected (a re-adopted VM
starts again at 0); ``serial_wait`` answers the offset after its match so a caller
can wait for the next thing after it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import re
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import OperationTimeout, UsageError

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[@-Z\\-_]|\r")


def strip_escapes(text: str) -> str:
    """Terminal escape sequences and carriage returns removed (busybox's ESC[6n...)."""
    return _ESCAPES.sub("", text)


class SerialDrain:
    def __init__(self, socket_path: Path, log: logging.Logger) -> None:
        self.socket_path = socket_path
        self._log = log
        self._text = ""
        self._base = 0  # offset of self._text[0] in the stream
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._eof = False

    @property
    def offset(self) -> int:
        return self._base + len(self._text)

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(str(self.socket_path))
        self._task = asyncio.create_task(self._drain(reader), name="serial-drain")

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                chunk = await reader.read(C.SERIAL_READ_CHUNK)
            except (ConnectionError, OSError) as err:
                self._log.debug("serial socket closed: %s", err)
                break
            if not chunk:
                break
            self._text += decoder.decode(chunk)
            excess = len(self._text) - C.SERIAL_BUFFER_CHARS
            if excess > 0:
                self._text = self._text[excess:]
                self._base += excess
            async with self._changed:
                self._changed.notify_all()
        self._eof = True
        async with self._changed:  # wake waiters: the console is gone
            self._changed.notify_all()

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            raise UsageError("the serial console is not connected")
        self._writer.write(data)
        await self._writer.drain()

    async def wait(self, pattern: str, *, since: int, timeout: float) -> dict[str, object]:
        """Wait until ``pattern`` (a regex, matched with escape sequences stripped)
        appears in the text received after offset ``since``."""
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise UsageError(f"bad serial pattern {pattern!r}: {err}") from err

        def search() -> dict[str, object] | None:
            start = max(0, since - self._base)
            raw = self._text[start:]
            # Map the match back to a raw offset: search line by line keeps it simple.
            position = 0
            for line in raw.splitlines(keepends=True):
                found = regex.search(strip_escapes(line))
                if found:
                    return {"match": found.group(0),
                            "offset": self._base + start + position + len(line)}
                position += len(line)
            return None

        async def wait_for_match() -> dict[str, object]:
            async with self._changed:
                while True:
                    result = search()
                    if result is not None:
                        return result
                    if self._eof:
                        raise OperationTimeout(f"serial console closed before {pattern!r}")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait_for_match(), timeout)
        except TimeoutError as err:
            raise OperationTimeout(
                f"{pattern!r} did not appear on the serial console within {timeout:g} s"
            ) from err

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._writer is not None:
            self._writer.close()
        self._eof = True
        async with self._changed:
            self._changed.notify_all()
