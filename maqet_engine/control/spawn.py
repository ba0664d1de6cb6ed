"""Start a detached runner and wait for its readiness line (no polling, no sleeps).

The spawner binds QEMU's QMP listening socket itself (and, for a VM with ``agent:
true``, the guest agent's), has the engine build QEMU's command line around those
sockets' fds (the command line is built once, and is exactly what runs), and writes it
to the runner's stdin as ``{"qemu_argv": [...], "qmp_fd": N, "agent_fd": M}``; the
runner inherits the fds under the same numbers and hands them to QEMU. So the sockets
exist before QEMU starts (no connect race), a QEMU that dropped its privileges
(``-runas``) never needs to create one, and the runner never imports the definition
package (it would cost every running VM ~4 MiB of memory).

The runner gets the write end of an ``os.pipe`` as ``--ready-fd``; it writes one JSON
line when QEMU answers QMP (``{"ok": true, ...}``) or when it fails
(``{"ok": false, "error": {...}}``), then closes it. EOF without a line means the
runner died: its log tail says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import (
    OperationTimeout,
    QEMULaunchError,
    RunnerUnavailable,
    error_from_dict,
    host_error,
)
from maqet_engine.paths import Paths, VMRuntimePaths


def bind_qmp_socket(path: Path) -> socket.socket:
    """A listening socket for QEMU at ``path`` (a stale one is replaced), mode 0600: QMP's,
    and the guest agent's. QEMU keeps listening on it for as long as it lives, so a new
    runner can reconnect."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fsencode(path))
        os.chmod(path, 0o600)
        sock.listen(C.QMP_SOCKET_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def log_tail(path: Path, lines: int = C.QEMU_LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' when missing)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - C.LOG_TAIL_BYTES))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def spawn_runner(name: str, paths: Paths, runtime: VMRuntimePaths, *,
                 qemu_argv: Callable[[dict[str, int]], list[str] | Mapping[str, Any]] | None,
                 agent: bool = False,
                 timeout: float = C.RUNNER_READY_TIMEOUT_S, op_id: str | None = None,
                 log_format: str = "text") -> dict[str, Any]:
    """Spawn the runner of VM ``name`` in a new session; return its readiness message.

    ``qemu_argv`` builds the command line the runner launches when there is no live
    QEMU to re-adopt, given the fds of the sockets bound here (``{"qmp": N}``, and
    ``"agent"`` with ``agent``): the command line, or a mapping with it as
    ``qemu_argv`` and the runner's other launch data (``fds``, ``multicast``,
    ``started_networks``, see ``runner/__main__.py``). None lets the runner only
    re-adopt.

    Raises the runner's own error (e.g. QEMULaunchError with QEMU's log tail), or
    RunnerUnavailable / OperationTimeout when it dies or stays silent.
    """
    from maqet_engine import trust

    data = paths.vm_data(name)
    runner_log = data.runner_log
    trust.check_vm_dir(paths, name)
    try:
        data.root.mkdir(mode=C.PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        log = os.fdopen(trust.open_private_log(runner_log), "ab")  # closed after the spawn
    except OSError as err:  # a full disk, a read-only home
        raise host_error(err, "open the runner log", runner_log) from err
    for log_file, what in ((data.qemu_log, "QEMU's log"), (data.serial_log, "the serial log")):
        try:  # QEMU appends to these: 0600, made here
            trust.make_private_file(log_file)
        except OSError as err:
            log.close()
            raise host_error(err, f"open {what}", log_file) from err
    launch: dict[str, Any] | None = None
    bound: list[socket.socket] = []
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        pass_fds = [write_fd]
        if qemu_argv is not None:
            fds: dict[str, int] = {}
            sockets = [("qmp", runtime.qmp_socket, "the QMP socket")]
            if agent:
                sockets.append(("agent", runtime.agent_socket, "the guest agent's socket"))
            for key, path, what in sockets:
                try:
                    bound.append(bind_qmp_socket(path))
                except OSError as err:
                    raise host_error(err, f"create {what}", path) from err
                fds[key] = bound[-1].fileno()
            built = qemu_argv(fds)
            launch = dict(built) if isinstance(built, Mapping) else {"qemu_argv": built}
            launch.update(qmp_fd=fds["qmp"], agent_fd=fds.get("agent"))
            pass_fds += [*fds.values(), *launch.get("fds", [])]
        proc = subprocess.Popen(
            # -P: no cwd on sys.path, so the caller's directory cannot shadow the
            # maqet_engine that _runner_env() puts on PYTHONPATH.
            [sys.executable, "-P", "-m", C.RUNNER_MODULE, "--name", name,
             "--ready-fd", str(write_fd), "--data", str(paths.data),
             "--runtime", str(paths.runtime), "--config", str(paths.config),
             "--log-format", log_format, *(("--op", op_id) if op_id else ())],
            stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=pass_fds,
            start_new_session=True, close_fds=True, env=_runner_env(),
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        log.close()
        os.close(write_fd)
        for sock in bound:
            sock.close()  # the runner holds its own copy
    _send_launch(proc, launch)
    try:
        line = _read_line(read_fd, timeout)
    finally:
        os.close(read_fd)
    if line is None:
        raise OperationTimeout(
            f"the runner of {name!r} did not report readiness within {timeout:.0f} s",
            hint=f"see {runner_log}",
        )
    if not line:
        code = proc.wait(timeout=C.KILL_TIMEOUT_S) if proc.poll() is None else proc.returncode
        tail = log_tail(runner_log)
        raise RunnerUnavailable(
            f"the runner of {name!r} exited ({code}) before it was ready"
            + (f": {' | '.join(tail.splitlines()[-3:])}" if tail else ""),
            hint=f"see {runner_log}",
        )
    message = json.loads(line)
    if not message.get("ok"):
        proc.wait(timeout=C.RUNNER_EXIT_TIMEOUT_S)  # it exits right after reporting
        error = message.get("error") or {}
        if error.get("type") == "QEMULaunchError":
            raise QEMULaunchError(str(error.get("message", "QEMU did not start")))
        raise error_from_dict(error)
    message["runner_pid"] = proc.pid
    return message


def _send_launch(proc: subprocess.Popen[bytes], launch: dict[str, Any] | None) -> None:
    """Write the launch data to the runner's stdin and close it (EOF ends its read). A
    runner that died first is reported by the ready pipe's EOF, not here."""
    assert proc.stdin is not None
    data = json.dumps(launch).encode() if launch else b""
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(data)
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()


def _read_line(fd: int, timeout: float) -> bytes | None:
    """Read up to the first newline or EOF; None on timeout, b'' on EOF without data."""
    deadline = time.monotonic() + timeout
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        if not poller.poll(remaining * 1000):
            return None
        chunk = os.read(fd, C.READY_PIPE_CHUNK)
        if not chunk:
            return data.strip() or b""
        data += chunk
    return data.split(b"\n", 1)[0]


def _runner_env() -> dict[str, str]:
    """Our environment, with this very maqet_engine importable by the runner."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = package_root + (os.pathsep + existing if existing else "")
    return env
