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
import socket
import subprocess
import time
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.frozen import Frozen
from maqet_engine.ipc.locks import qemu_alive


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
    def __init__(self, pid: int, pidfd: int, popen: subprocess.Popen[bytes] | None) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._popen = popen
        self._exit: asyncio.Future[ExitInfo] | None = None

    @property
    def is_child(self) -> bool:
        return self._popen is not None

    # --- creation ---------------------------------------------------------------
    @classmethod
    def launch(cls, argv: list[str], *, qemu_log: Path, pass_fds: tuple[int, ...]) -> QEMUProcess:
        """Start QEMU in a new session with its output appended to ``qemu_log``."""
        qemu_log.parent.mkdir(parents=True, exist_ok=True)
        with open(qemu_log, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- maqet {stamp}: starting QEMU\n".encode())
            log.flush()
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=pass_fds,
                start_new_session=True, close_fds=True,
            )
        return cls(popen.pid, os.pidfd_open(popen.pid), popen)

    @classmethod
    def adopt(cls, pid: int, marker: str) -> QEMUProcess | None:
        """Take over a running QEMU if ``pid`` is alive and its command line contains
        ``marker`` (the VM's runtime directory, unique per VM id). None otherwise."""
        try:
            pidfd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            return None
        # Checked after pidfd_open: the pidfd pins this very process from here on.
        if not qemu_alive(pid, marker):
            os.close(pidfd)
            return None
        return cls(pid, pidfd, None)

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


def bind_qmp_socket(path: Path) -> socket.socket:
    """The QMP listening socket, bound by the runner and handed to QEMU as an fd: the
    path exists before QEMU starts (no connect race), QEMU keeps listening on it for
    as long as it lives (a new runner can reconnect)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.fsencode(path))
    os.chmod(path, 0o600)
    sock.listen(C.QMP_SOCKET_BACKLOG)
    return sock


def with_qmp_fd(argv: list[str], qmp_socket: Path, fd: int) -> list[str]:
    """Replace ``-qmp unix:<qmp_socket>,...`` by a monitor on the pre-bound ``fd``."""
    prefix = f"unix:{qmp_socket}"
    for index, arg in enumerate(argv[:-1]):
        if arg == "-qmp" and argv[index + 1].split(",", 1)[0] == prefix:
            return [
                *argv[:index],
                "-chardev", f"socket,id={C.QMP_CHARDEV_ID},fd={fd},server=on,wait=off",
                "-mon", f"chardev={C.QMP_CHARDEV_ID},mode=control",
                *argv[index + 2:],
            ]
    raise ValueError(f"the QEMU command line has no '-qmp {prefix},...' monitor")


def read_from(path: Path, offset: int, lines: int = C.QEMU_LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines written to ``path`` after byte ``offset``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(C.LOG_TAIL_BYTES)
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
