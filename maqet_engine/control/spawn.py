"""Start a detached runner and wait for its readiness line (no polling, no sleeps).

The spawner builds QEMU's command line from the spec (:func:`qemu_launch_argv`) and
writes it to the runner's stdin as ``{"qemu_argv": [...]}``: the runner itself never
imports the spec package (it would cost every running VM ~4 MiB of memory).

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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import (
    OperationTimeout,
    QEMULaunchError,
    RunnerUnavailable,
    error_from_dict,
)
from maqet_engine.paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from maqet_engine.store import VMRecord


def qemu_launch_argv(record: VMRecord, paths: Paths) -> list[str]:
    """QEMU's command line for ``record`` (spec code, imported here, not in the runner)."""
    from maqet_engine.definition import Spec, build_argv, resolve_accel

    spec = Spec.from_json(record.spec_json)
    accel = resolve_accel(spec.data.get("accel", C.DEFAULT_ACCEL))
    return build_argv(spec, runtime=paths.vm_runtime(record.id),
                      data=paths.vm_data(record.name), accel=accel)


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


def spawn_runner(name: str, paths: Paths, *, qemu_argv: list[str] | None,
                 timeout: float = C.RUNNER_READY_TIMEOUT_S) -> dict[str, Any]:
    """Spawn the runner of VM ``name`` in a new session; return its readiness message.

    ``qemu_argv`` (from :func:`qemu_launch_argv`) is what the runner launches when there is
    no live QEMU to re-adopt; None lets it only re-adopt.

    Raises the runner's own error (e.g. QEMULaunchError with QEMU's log tail), or
    RunnerUnavailable / OperationTimeout when it dies or stays silent.
    """
    runner_log = paths.vm_data(name).runner_log
    runner_log.parent.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        with open(runner_log, "ab") as log:
            proc = subprocess.Popen(
                # -P: no cwd on sys.path, so the caller's directory cannot shadow the
                # maqet_engine that _runner_env() puts on PYTHONPATH.
                [sys.executable, "-P", "-m", C.RUNNER_MODULE, "--name", name,
                 "--ready-fd", str(write_fd), "--data", str(paths.data),
                 "--runtime", str(paths.runtime), "--config", str(paths.config)],
                stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=(write_fd,),
                start_new_session=True, close_fds=True, env=_runner_env(),
            )
    finally:
        os.close(write_fd)
    _send_launch(proc, qemu_argv)
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


def _send_launch(proc: subprocess.Popen[bytes], qemu_argv: list[str] | None) -> None:
    """Write the launch data to the runner's stdin and close it (EOF ends its read). A
    runner that died first is reported by the ready pipe's EOF, not here."""
    assert proc.stdin is not None
    data = json.dumps({"qemu_argv": qemu_argv}).encode() if qemu_argv else b""
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
