"""The runner's control socket, kept reachable: when its runtime directory is removed
under the live runner (tmp cleaners; logind removes ``XDG_RUNTIME_DIR`` at logout),
a client that finds the socket gone sends :data:`~maqet_engine.constants.RECREATE_SOCKET_SIGNAL`
and the runner makes the directory (private, as at start) and the socket again.

Nothing else is lost: the runner keeps its connected QMP session and serial stream;
only a *new* runner could not reconnect to QEMU by path any more (QEMU holds the
listening socket whose name was removed). Requests on connections accepted by the
old socket are answered as before.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from maqet_engine import constants as C
from maqet_engine.errors import MaqetError
from maqet_engine.paths import Paths
from maqet_engine.runner.server import ControlServer, Dispatch


def ignore_recreate_requests() -> None:
    """Until :meth:`ControlSocket.start`, a request is ignored rather than fatal (the
    signal's default action ends the process). A Python handler, not SIG_IGN: QEMU,
    started later, must not inherit it."""
    signal.signal(getattr(signal, C.RECREATE_SOCKET_SIGNAL), lambda *_: None)


class ControlSocket:
    """A :class:`ControlServer` that can be re-created; same close API."""

    def __init__(self, paths: Paths, vm_id: int, dispatch: Dispatch,
                 log: logging.Logger, *, streams: frozenset[str] = frozenset()) -> None:
        self._paths = paths
        self._vm_id = vm_id
        self._dispatch = dispatch
        self._streams = streams
        self._log = log
        self.path = paths.vm_runtime(vm_id).control_socket
        self._servers: list[ControlServer] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._start_one()
        asyncio.get_running_loop().add_signal_handler(
            getattr(signal, C.RECREATE_SOCKET_SIGNAL), self._requested)

    async def _start_one(self) -> None:
        server = ControlServer(self.path, self._dispatch, self._log, streams=self._streams)
        await server.start()
        self._servers.append(server)

    def _requested(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._recreate(), name="recreate-socket")

    async def _recreate(self) -> None:
        if self.path.exists():
            return
        self._log.warning("control socket %s is gone (runtime directory removed?); "
                          "re-creating it", self.path)
        try:
            self._paths.ensure_runtime(self._vm_id)
            await self._servers[-1].close(0)  # stop accepting on the orphaned socket
            await self._start_one()
        except (MaqetError, OSError) as err:
            self._log.error("cannot re-create the control socket: %s", err)

    async def close(self, grace: float) -> None:
        asyncio.get_running_loop().remove_signal_handler(
            getattr(signal, C.RECREATE_SOCKET_SIGNAL))
        ignore_recreate_requests()  # removing the handler restored the fatal default
        if self._task is not None:
            self._task.cancel()
        for server in self._servers:
            await server.close(grace if server is self._servers[-1] else 0)

    async def disconnect_clients(self, grace: float) -> None:
        for server in self._servers:
            await server.disconnect_clients(grace)
