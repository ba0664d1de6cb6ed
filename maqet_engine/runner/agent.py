"""The guest agent's channel: qemu-ga in the guest, on the virtio-serial port named
``org.qemu.guest_agent.0``, whose host end (a socket the spawner bound and QEMU listens
on) has this runner as its one client.

qemu-ga answers one request at a time, in order, and its replies carry no id. So the
runner serialises requests (one on the wire at a time, :attr:`AgentChannel._lock`) and
must know that the stream is *in step* before it sends one: it sends ``guest-sync`` with
a fresh id and discards everything until that id comes back (replies to an earlier
agent's requests, a late reply to a request that timed out). It never sends the 0xFF
"reset" byte: qemu-ga 7.2 answers it with a parse error.

The channel's state, shown by ``maqet status``::

    absent     the guest has not opened its port: qemu-ga is not running (not installed,
               not started yet, stopped, the guest rebooting)
    syncing    the port is open (or its state is unknown, after a re-adoption) and the
               runner waits for its guest-sync id
    connected  in step: requests go through
    closed     QEMU is gone

QEMU reports the guest opening and closing the port (QMP ``VSERPORT_CHANGE`` for the
port ``maqet.qga0``, fed in by :meth:`port_changed`): opening starts a sync, closing
(qemu-ga stopped, or a guest reset: a reboot) fails the request on the wire at once and
makes later ones wait for the next opening. A request that gets no reply within its
timeout leaves the stream out of step: the next one syncs first.

Every request is bounded by a timeout its caller chooses: waiting for the channel to be
in step counts against it, and an agent that does not answer is
:class:`~maqet_engine.errors.AgentUnavailable` saying which of the states above it was
in, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import AgentCommandError, AgentUnavailable

ABSENT, SYNCING, CONNECTED, CLOSED = (C.AGENT_ABSENT, C.AGENT_SYNCING, C.AGENT_CONNECTED,
                                      C.AGENT_CLOSED)


class _PortClosed(Exception):  # noqa: N818 - internal, never leaves this module
    """The guest closed the agent's port while a request waited for its reply."""


class AgentChannel:
    """The runner's end of the guest agent's port (see the module doc)."""

    def __init__(self, socket_path: Path, log: logging.Logger, *,
                 port_open: bool | None) -> None:
        """``port_open``: whether the guest has the port open now (False for a QEMU this
        runner just launched; None when unknown: a re-adopted QEMU)."""
        self.socket_path = socket_path
        self._log = log
        self._port_open = port_open
        self.state = ABSENT if port_open is False else SYNCING
        self.since = time.time()  # when the state last changed (wall clock)
        self.last_sync: float | None = None  # when the stream was last brought in step
        self.reason = "the guest has not opened the agent's port yet" if port_open is False \
            else "not synced yet"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()  # one request on the wire at a time
        self._changed = asyncio.Event()  # set (and replaced) at each state change
        self._gone = asyncio.Event()  # set when the port closes (replaced when it opens)
        self._ids = itertools.count(int.from_bytes(os.urandom(3), "big") * 1000 + 1)
        self._sync_task: asyncio.Task[None] | None = None
        # Counts the port's closings: a pid of guest-exec means nothing to the next agent.
        self.epoch = 0

    # --- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to the port's socket (queued in its backlog until QEMU accepts: it was
        bound before QEMU started), and sync in the background unless the port is known
        to be closed."""
        self._reader, self._writer = await asyncio.open_unix_connection(
            str(self.socket_path), limit=C.AGENT_MAX_REPLY_BYTES)
        if self._port_open is not False:
            self._start_sync(attempts=None if self._port_open else C.AGENT_SYNC_ATTEMPTS_UNKNOWN)

    async def close(self) -> None:
        self._set(CLOSED, "QEMU exited")
        self.epoch += 1
        self._gone.set()
        await self._stop_sync()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()

    def view(self) -> dict[str, Any]:
        """What ``status`` shows."""
        return {"state": self.state, "since": self.since, "last_sync": self.last_sync,
                "reason": None if self.state == CONNECTED else self.reason}

    # --- events from QEMU -----------------------------------------------------------------
    def port_changed(self, opened: bool) -> None:
        """QMP ``VSERPORT_CHANGE`` for the agent's port: the guest opened or closed it."""
        if self.state == CLOSED:
            return
        self._port_open = opened
        self._log.info("guest agent port %s", "opened" if opened else "closed")
        if opened:
            self._gone = asyncio.Event()
            self._set(SYNCING, "the guest opened the agent's port; syncing")
            self._start_sync(attempts=None)
        else:
            self.epoch += 1
            self._gone.set()  # fails the request on the wire, stops a sync
            self._set(ABSENT, f"the guest closed the agent's port at "
                      f"{time.strftime('%H:%M:%S')} (qemu-ga stopped, or the guest reset)")

    # --- requests --------------------------------------------------------------------------
    async def request(self, command: str, arguments: dict[str, Any] | None = None, *,
                      timeout: float) -> Any:
        """Run one agent command: its ``return`` value.

        :param timeout: seconds for the whole request: waiting for the channel to be in
            step (a sync, an agent that is not running yet) and for the reply.
        :raise AgentUnavailable: no reply within ``timeout``, or the port closed.
        :raise AgentCommandError: qemu-ga answered with an error.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    await self._port_usable()
                    async with self._lock:
                        if self.state == SYNCING:
                            await self._sync_locked(attempts=None)
                        if self.state == CONNECTED:
                            return await self._exchange(command, arguments, timeout)
        except TimeoutError:
            raise AgentUnavailable(self._unavailable(command, timeout),
                                   hint=self._hint()) from None
        except _PortClosed:
            raise AgentUnavailable(
                f"the guest agent closed its port before answering {command} (qemu-ga "
                "stopped, or the guest is rebooting)",
                hint="retry once the guest is up again") from None

    async def _port_usable(self) -> None:
        """Wait while the port is known to be closed (or the channel is gone)."""
        while self.state in (ABSENT, CLOSED):
            if self.state == CLOSED:
                raise AgentUnavailable("the guest agent's channel is closed: QEMU exited")
            if self._port_open is None:  # unknown (re-adopted): try a sync anyway
                self._set(SYNCING, "syncing")
                return
            changed = self._changed
            await changed.wait()

    async def _exchange(self, command: str, arguments: dict[str, Any] | None,
                        timeout: float) -> Any:
        """Send one request and read its reply (the lock held, the stream in step)."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            await self._send(message)
            reply = await self._next(accept=None)
        except asyncio.CancelledError:  # a timeout: a late reply may come; sync first
            if self.state == CONNECTED:
                self._set(SYNCING, f"qemu-ga did not answer {command} within {timeout:g} s "
                          "(hung or busy)")
            raise
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            raise AgentCommandError(command, str(error.get("class", "GenericError")),
                                    str(error.get("desc", reply["error"])))
        return reply.get("return")

    # --- keeping in step ---------------------------------------------------------------------
    def _start_sync(self, *, attempts: int | None) -> None:
        if self._sync_task is not None and not self._sync_task.done():
            self._sync_task.cancel()
        self._sync_task = asyncio.create_task(self._background_sync(attempts),
                                              name="agent-sync")

    async def _stop_sync(self) -> None:
        task, self._sync_task = self._sync_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _background_sync(self, attempts: int | None) -> None:
        """Bring the stream in step as soon as the port opens (``status`` shows it, and
        the first request finds it ready). With an unknown port state, give up after
        ``attempts``: the port is presumably closed, and its opening will be reported."""
        try:
            async with self._lock:
                if self.state == SYNCING:
                    await self._sync_locked(attempts=attempts)
        except (AgentUnavailable, OSError) as err:
            self._log.warning("guest agent channel: %s", err)

    async def _sync_locked(self, *, attempts: int | None) -> None:
        """``guest-sync`` with a fresh id, repeated with a growing wait, until that id
        comes back (everything else read meanwhile is discarded). Returns once connected,
        when the port closes (absent), or after ``attempts`` unanswered ones (None: no
        limit; then absent)."""
        wait = C.AGENT_SYNC_FIRST_S
        tried = 0
        started = time.monotonic()
        while attempts is None or tried < attempts:
            tried += 1
            sync_id = next(self._ids)
            await self._send({"execute": "guest-sync", "arguments": {"id": sync_id}})
            try:
                async with asyncio.timeout(wait):
                    await self._next(accept=sync_id)
            except _PortClosed:
                return  # port_changed() said why; a request waits for the next opening
            except TimeoutError:
                self.reason = (f"qemu-ga did not answer guest-sync within "
                               f"{time.monotonic() - started:.1f} s (not running, hung, "
                               "or busy)")
                wait = min(wait * 2, C.AGENT_SYNC_MAX_S)
                continue
            self.last_sync = time.time()
            self._log.info("guest agent in sync (%d attempt%s, %.2f s)", tried,
                           "" if tried == 1 else "s", time.monotonic() - started)
            self._set(CONNECTED, "")
            return
        self._set(ABSENT, self.reason)

    # --- the wire --------------------------------------------------------------------------
    async def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None:
            raise AgentUnavailable("the guest agent's channel is not connected")
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await self._writer.drain()

    async def _next(self, *, accept: int | None) -> dict[str, Any]:
        """The next reply object; with ``accept`` (a sync id) only ``{"return": accept}``,
        discarding the rest. Raises :class:`_PortClosed` when the port closes first."""
        gone = asyncio.ensure_future(self._gone.wait())
        read: asyncio.Future[dict[str, Any] | None] | None = None
        try:
            while True:
                read = asyncio.ensure_future(self._read_line())
                await asyncio.wait({read, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    raise _PortClosed
                reply, read = read.result(), None
                if reply is None:
                    continue  # noise before the stream is in step (0xFF, a half line)
                if accept is None or reply.get("return") == accept:
                    return reply
        finally:
            gone.cancel()
            # Never leave a read behind (also when cancelled by a timeout): it would take
            # the next reply from whoever reads next. A cancelled readuntil() consumes
            # nothing: the line stays buffered for the next read.
            if read is not None and not read.done():
                read.cancel()
                with contextlib.suppress(BaseException):
                    await read

    async def _read_line(self) -> dict[str, Any] | None:
        assert self._reader is not None
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            self._set(CLOSED, "QEMU closed the agent's channel")
            self._gone.set()
            raise AgentUnavailable("the guest agent's channel closed (QEMU exited)") from None
        except asyncio.LimitOverrunError as err:  # more than any qemu-ga reply: discard it
            await self._reader.readexactly(err.consumed)  # (its rest fails to parse next)
            self._log.warning("guest agent sent a line over %d bytes; discarded",
                              C.AGENT_MAX_REPLY_BYTES)
            return None
        try:
            reply = json.loads(line.strip(b"\xff \t\r\n") or b"null")
        except ValueError:
            return None
        return reply if isinstance(reply, dict) else None

    # --- helpers -----------------------------------------------------------------------------
    def _set(self, state: str, reason: str) -> None:
        if state != self.state:
            self._log.info("guest agent: %s -> %s%s", self.state, state,
                           f" ({reason})" if reason else "")
            self.state = state
            self.since = time.time()
        self.reason = reason
        self._changed.set()
        self._changed = asyncio.Event()

    def _unavailable(self, command: str, timeout: float) -> str:
        if self.state == ABSENT:
            return (f"no guest agent answered {command} within {timeout:g} s: qemu-ga is "
                    f"not running in the guest ({self.reason})")
        return f"the guest agent did not answer {command} within {timeout:g} s ({self.reason})"

    def _hint(self) -> str:
        if self.state == ABSENT:
            return ("check that qemu-ga is installed and running in the guest on the port "
                    f"{C.AGENT_PORT_NAME} (or wait for the guest to boot), or pass a longer "
                    "timeout")
        return "pass a longer timeout, or check the guest (maqet console)"
