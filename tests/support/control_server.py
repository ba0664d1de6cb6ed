"""The runner's real ControlServer in a thread's event loop, for tests that talk to it
with the sync client: a subclass gives ``dispatch`` and the stream methods."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from maqet_engine.ipc import protocol
from maqet_engine.runner.server import ControlServer, Stream

BOUND_S = 10.0  # starting and stopping a local server: milliseconds


class ServerThread:
    """Enter: the server listens on ``path``; exit: it closed, its clients dropped and
    its loop's thread joined."""

    streams: frozenset[str] = frozenset()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def dispatch(self, request: protocol.Request, stream: Stream | None) -> Any:
        raise NotImplementedError

    def started(self) -> None:
        """Called in __enter__ before the server starts (in the test's thread)."""

    def __enter__(self) -> Any:
        self._thread.start()
        self.started()
        self.server = ControlServer(self.path, self.dispatch, logging.getLogger("test"),
                                    streams=self.streams)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(BOUND_S)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(0), self.loop).result(BOUND_S)
        asyncio.run_coroutine_threadsafe(self.server.disconnect_clients(1),
                                         self.loop).result(BOUND_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(BOUND_S)
