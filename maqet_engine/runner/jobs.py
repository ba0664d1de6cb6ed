"""QMP background jobs (``snapshot-save``, ``snapshot-load``, ``snapshot-delete``, ...)
awaited by their ``JOB_STATUS_CHANGE`` events, never by polling.

A job command returns at once; QEMU then reports the job's progress as events::

    created -> running -> [waiting -> pending ->] concluded -> (dismissed: null)
    created -> running -> aborting -> concluded                (failed)

A concluded job keeps its error (``query-jobs``: ``error``) until it is dismissed.
:func:`run_job` starts the job with its listener already registered (no event can be
missed), waits for ``concluded``, reads the error, dismisses the job, and raises
:class:`~maqet_engine.errors.QMPCommandError` (``error_class`` ``JobFailed``) with
QEMU's own message when the job failed. A timeout says which state the job was still
in; the job is then dismissed in the background once it concludes.

Wired into the runner as the IPC method ``job`` by :func:`ipc_handler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError

from maqet_engine import constants as C
from maqet_engine.errors import (
    OperationTimeout,
    QMPCommandError,
    RunnerUnavailable,
    StateConflict,
    UsageError,
)

JOB_FAILED = "JobFailed"  # error_class of a job that concluded with an error
_log = logging.getLogger(__name__)
_background: set[asyncio.Task[Any]] = set()  # keeps late-dismiss tasks referenced


def new_job_id() -> str:
    return C.SNAPSHOT_JOB_PREFIX + uuid.uuid4().hex[:12]


async def _execute(qmp: QMPClient, command: str, arguments: dict[str, Any] | None = None,
                   ) -> Any:
    try:
        return await qmp.execute(command, arguments)
    except ExecuteError as err:
        raise QMPCommandError(command, err.error_class, err.error.error.desc) from err
    except QMPError as err:
        raise RunnerUnavailable(f"QMP {command} failed: {err}",
                                hint="QEMU is exiting or exited") from err


async def _job_info(qmp: QMPClient, job_id: str) -> dict[str, Any] | None:
    for job in await _execute(qmp, "query-jobs"):
        if job.get("id") == job_id:
            return dict(job)
    return None


async def run_job(qmp: QMPClient, command: str, arguments: dict[str, Any], job_id: str,
                  timeout: float, *, abort: asyncio.Event | None = None) -> dict[str, Any]:
    """Run one QMP job command to its end.

    :param qmp: a connected client.
    :param command: e.g. ``snapshot-save``.
    :param arguments: the command's arguments; ``job-id`` is set to ``job_id``.
    :param job_id: the job's id (unique among QEMU's current jobs).
    :param timeout: seconds the job may take from the command's start to ``concluded``.
    :param abort: when set before the job ends (QEMU exited), stop waiting.
    :return: ``{"job_id", "command", "type", "statuses", "elapsed"}``.
    :raise QMPCommandError: QEMU refused the command, or the job failed
        (``error_class`` ``JobFailed``, ``desc`` QEMU's error).
    :raise OperationTimeout: the job was still running after ``timeout``.
    :raise RunnerUnavailable: QMP went away (QEMU exited) meanwhile.
    """
    start = time.monotonic()
    deadline = start + timeout
    listener = EventListener(
        C.SNAPSHOT_JOB_EVENT,
        event_filter=lambda event: event.get("data", {}).get("id") == job_id,
    )
    statuses: list[str] = []
    with qmp.listen(listener):
        await _execute(qmp, command, {**arguments, "job-id": job_id})
        while not statuses or statuses[-1] not in ("concluded", "null"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise await _timed_out(qmp, command, job_id, timeout, statuses)
            statuses.append(await _next_status(listener, remaining, abort, command, job_id))
    info = await _job_info(qmp, job_id) if statuses[-1] == "concluded" else None
    if info is not None:
        await _execute(qmp, "job-dismiss", {"id": job_id})
    elapsed = round(time.monotonic() - start, 3)
    if info is not None and info.get("error"):
        raise QMPCommandError(command, JOB_FAILED, str(info["error"]))
    return {"job_id": job_id, "command": command, "type": (info or {}).get("type"),
            "statuses": statuses, "elapsed": elapsed}


async def _next_status(listener: EventListener, timeout: float, abort: asyncio.Event | None,
                       command: str, job_id: str) -> str:
    get = asyncio.ensure_future(listener.get())
    waiters: set[asyncio.Future[Any]] = {get}
    if abort is not None:
        waiters.add(asyncio.ensure_future(abort.wait()))
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
    if get in done:
        return str(get.result()["data"]["status"])
    if done:  # abort fired
        raise RunnerUnavailable(f"QEMU exited while {command} (job {job_id}) was running")
    return ""  # timed out: the caller's deadline check reports it


async def _timed_out(qmp: QMPClient, command: str, job_id: str, timeout: float,
                     statuses: list[str]) -> OperationTimeout:
    status = next((s for s in reversed(statuses) if s), "created")
    progress = ""
    with contextlib.suppress(Exception):
        info = await _job_info(qmp, job_id)
        if info is not None:
            status = str(info.get("status", status))
            done, total = info.get("current-progress"), info.get("total-progress")
            if total:
                progress = f", progress {done}/{total}"
    task = asyncio.create_task(_dismiss_when_concluded(qmp, job_id))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return OperationTimeout(
        f"{command} (job {job_id}) still {status} after {timeout:g} s{progress}",
        hint="it goes on in QEMU; check QMP query-jobs, or retry with a "
             "longer timeout",
    )


async def _dismiss_when_concluded(qmp: QMPClient, job_id: str) -> None:
    """After a timeout: dismiss the job once it concludes (its id stays usable)."""
    listener = EventListener(
        C.SNAPSHOT_JOB_EVENT,
        event_filter=lambda event: event.get("data", {}).get("id") == job_id,
    )
    with contextlib.suppress(QMPError, QMPCommandError, RunnerUnavailable), \
            qmp.listen(listener):
        info = await _job_info(qmp, job_id)
        while info is not None and info.get("status") != "concluded":
            event = await listener.get()
            if event["data"]["status"] == "concluded":
                break
        if info is not None:
            await _execute(qmp, "job-dismiss", {"id": job_id})
            _log.info("dismissed job %s after it concluded late", job_id)


# --- IPC wiring -----------------------------------------------------------------------
def ipc_handler(vm: Any, *, lock: asyncio.Lock | None = None,
                ) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    """The runner's ``job`` method for a ``SupervisedVM`` (``vm.qmp``, ``vm.exited``).

    params: ``command``, ``arguments={}``, ``timeout=SNAPSHOT_JOB_TIMEOUT_S``; a
    ``job-id`` in ``arguments`` is used, else one is made. Result: see :func:`run_job`.
    ``lock``: held for the whole job; the runner's input lock, so that no snapshot is
    saved or loaded while keys are being pressed (the guest would be restored with
    half a command typed, or keep receiving it after the load).
    """
    lock = lock or asyncio.Lock()

    async def job(params: dict[str, Any]) -> Any:
        unknown = set(params) - {"command", "arguments", "timeout"}
        if unknown:
            raise UsageError(f"unknown parameters: {', '.join(sorted(unknown))}")
        command = params.get("command")
        arguments = params.get("arguments") or {}
        timeout = params.get("timeout", C.SNAPSHOT_JOB_TIMEOUT_S)
        if not isinstance(command, str) or not command:
            raise UsageError("parameter 'command' must be a QMP job command name")
        if not isinstance(arguments, dict):
            raise UsageError("parameter 'arguments' must be an object")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise UsageError("parameter 'timeout' must be a positive number of seconds")
        if vm.exited.is_set():
            raise StateConflict(f"VM {vm.name!r} is {vm.status.value}")
        job_id = str(arguments.pop("job-id", "") or new_job_id())
        async with lock:
            return await run_job(vm.qmp, command, arguments, job_id, float(timeout),
                                 abort=vm.exited)

    return job
