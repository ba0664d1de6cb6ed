"""A real Unix socket playing QEMU's serial chardev (the listening end QEMU would own),
and a runner's SerialDrain connected to it: console tests without QEMU or mocks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from maqet_engine.runner.serial import SerialDrain

CONNECT_TIMEOUT_S = 5.0  # the drain's connect to a local socket: milliseconds


class FakeChardev:
    """The listening end QEMU would own: the drain connects, the test writes."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()

    async def accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     ) -> None:
        self.writer = writer
        self.connected.set()

    async def send(self, text: str) -> None:
        assert self.writer is not None
        self.writer.write(text.encode())
        await self.writer.drain()


@contextlib.asynccontextmanager
async def drain_of(directory: Path) -> AsyncIterator[tuple[SerialDrain, FakeChardev]]:
    """A started SerialDrain connected to a FakeChardev at ``directory/serial.sock``;
    both closed on exit."""
    chardev = FakeChardev()
    path = directory / "serial.sock"
    server = await asyncio.start_unix_server(chardev.accept, path=str(path))
    drain = SerialDrain(path, logging.getLogger("test.serial"))
    try:
        await drain.start()
        await asyncio.wait_for(chardev.connected.wait(), CONNECT_TIMEOUT_S)
        yield drain, chardev
    finally:
        await drain.close()
        server.close()
        if chardev.writer is not None:
            chardev.writer.close()
