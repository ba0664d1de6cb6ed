"""The QEMU process a runner supervises: launched by it, or re-adopted after a runner
crash. Either way its exit is watched through a pidfd (``os.pidfd_open`` works for
non-children too), so no polling and no PID guesses.

QEMU never gets a pipe: its stdout/stderr go to ``qemu.log`` and it runs in its own
session, so it survives its runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import host_error
from maqet_engine.frozen import Frozen
from maqet_engine.ipc import procs


class ExitInfo(Frozen):
    """How QEMU ended. ``code``/``signal`` are None for an adopted (non-child) QEMU.
    (A :class:`Frozen` record, not a dataclass: the runner does not import dataclasses.)"""

    __slots__ = ("code", "signal")
    code: int | None
    signal: int | None

    @property
    def known(self) -> bool:
        return self.code is not None or self.signal is not None

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {signal.Signals(self.signal).name}"
        if self.code is not None:
            return f"exit code {self.code}"
        return "exit status unknown (adopted process)"


class QEMUProcess:
    def __init__(self, pid: int, pidfd: int, popen: subprocess.Popen[bytes] | None,
                 started: int | None) -> None:
        self.pid = pid
        self.started = started  # start time (ipc.procs): with the pid, QEMU's identity
        self._pidfd = pidfd
        self._popen = popen
        self._exit: asyncio.Future[ExitInfo] | None = None

    @property
    def pidfd(self) -> int:
        return self._pidfd

    @property
    def is_child(self) -> bool:
        return self._popen is not None

    # --- creation ---------------------------------------------------------------
    @classmethod
    def launch(cls, argv: list[str], *, qemu_log: Path, pass_fds: tuple[int, ...]) -> QEMUProcess:
        """Start QEMU in a new session with its output appended to ``qemu_log`` (0600).

        :raise HostError: ``qemu_log`` cannot be created or written (a full disk, a
            read-only filesystem): QEMU is not started.
        :raise OSError: QEMU itself cannot be executed.
        """
        from maqet_engine.trust import open_private_log

        try:
            qemu_log.parent.mkdir(mode=C.PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            # Unbuffered: a write that fails fails here, not again when closing.
            log = os.fdopen(open_private_log(qemu_log), "ab", buffering=0)
        except OSError as err:
            raise host_error(err, "open QEMU's log", qemu_log) from err
        with log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            try:
                log.write(f"--- maqet {stamp}: starting QEMU\n".encode())
            except OSError as err:
                raise host_error(err, "write QEMU's log", qemu_log) from err
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=pass_fds,
                start_new_session=True, close_fds=True,
            )
        pidfd = os.pidfd_open(popen.pid)  # our child: it cannot be reaped before this
        return cls(popen.pid, pidfd, popen, procs.start_time(popen.pid))

    @classmethod
    def adopt(cls, pid: int | None, started: int | None) -> QEMUProcess | None:
        """Take over the running QEMU (``pid``, ``started``) the store recorded; None
        when that very process is gone (a reused PID is another process)."""
        pidfd = procs.open_pidfd(pid, started)
        if pidfd is None or pid is None:
            return None
        return cls(pid, pidfd, None, started)

    # --- watching and signalling ----------------------------------------------------
    def exit_future(self) -> asyncio.Future[ExitInfo]:
        """Resolves with :class:`ExitInfo` when QEMU exits (and is reaped if ours)."""
        if self._exit is None:
            loop = asyncio.get_running_loop()
            self._exit = loop.create_future()
            loop.add_reader(self._pidfd, self._on_exit)
        return self._exit

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        info = ExitInfo(code=None, signal=None)
        if self._popen is not None:
            code = self._popen.wait()
            info = (ExitInfo(code=code, signal=None) if code >= 0
                    else ExitInfo(code=None, signal=-code))
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(info)

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, sig)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._pidfd)


def read_from(path: Path, offset: int, lines: int = C.QEMU_LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines written to ``path`` after byte ``offset``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(C.LOG_TAIL_BYTES)
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
