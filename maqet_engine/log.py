"""Library logging, as qemu.qmp does it: the package logger ``maqet_engine`` has a
``NullHandler`` (a library never prints on its own), each module logs to its child
logger, and a front end decides where it goes (the CLI's ``--verbose``: stderr).

The engine's decisions — what was *wanted*, what was *found*, which *action* was
taken — are logged at INFO and also appended to the VM's runner log, so one file
tells what happened to a VM and who asked for it, whichever process decided.

The runner log has two formats (``MAQET_LOG_FORMAT``, docs/runner.md): ``text`` (the
default), one line per record ending in `` op=ID`` while an operation is served, and
``json``, one object per line with ``time``, ``level``, ``vm``, ``event``, ``message``
and ``op`` (plus ``logger``, ``process``, and ``exception`` for a traceback). Both are
made here, for the runner's own lines and for the engine's decision lines alike.

Import this module only where something is logged: importing ``logging`` costs the
CLI's fast paths (``maqet ls``) several milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, TextIO

from maqet_engine import constants as C
from maqet_engine import ops

PACKAGE = "maqet_engine"
_ROOT = logging.getLogger(PACKAGE)
if not any(isinstance(h, logging.NullHandler) for h in _ROOT.handlers):
    _ROOT.addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """Logger for a maqet module (``name`` is its ``__name__``)."""
    return logging.getLogger(name)


def enable_verbose(stream: TextIO) -> logging.Handler:
    """Show the package's INFO messages on ``stream`` (the CLI's ``--verbose``)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("maqet: %(message)s"))
    _ROOT.addHandler(handler)
    _ROOT.setLevel(logging.INFO)
    return handler


def log_format(environ: dict[str, str] | None = None) -> str:
    """The runner log format this process asks for: ``MAQET_LOG_FORMAT`` (``text`` when
    unset).

    :raise UsageError: another value (the spawner checks it before a runner starts).
    """
    from maqet_engine.errors import UsageError

    value = (os.environ if environ is None else environ).get(C.ENV_LOG_FORMAT, "").strip()
    if not value:
        return C.LOG_FORMATS[0]
    if value.lower() not in C.LOG_FORMATS:
        raise UsageError(f"{C.ENV_LOG_FORMAT}={value!r} is not a log format",
                         hint=f"use one of: {', '.join(C.LOG_FORMATS)}, or unset it")
    return value.lower()


def _iso_time(seconds: float) -> str:
    """Local time with milliseconds and the UTC offset (ISO 8601)."""
    from datetime import datetime

    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="milliseconds")


def json_line(*, at: float, level: str, vm: str | None, event: str | None, message: str,
              op: str | None, **extra: Any) -> str:
    """One record of the JSON runner log (without the newline)."""
    data = {"time": _iso_time(at), "level": level, "vm": vm, "event": event,
            "message": message, "op": op}
    data.update(extra)
    return json.dumps(data, default=str)


class _RecordContext(logging.Filter):
    """Gives each record ``vm`` (this runner's VM), ``event`` (None unless the call
    passed ``extra={"event": ...}``) and ``op`` (passed, or the operation this task
    serves: :data:`maqet_engine.ops.current`)."""

    def __init__(self, vm: str | None) -> None:
        super().__init__()
        self._vm = vm

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "op", None) is None:
            record.op = ops.current_op()
        if getattr(record, "vm", None) is None:
            record.vm = self._vm
        if not hasattr(record, "event"):
            record.event = None
        return True


class TextFormatter(logging.Formatter):
    """``TIME PROCESS[PID] LEVEL LOGGER: MESSAGE op=ID`` (``op=`` only under an
    operation)."""

    def __init__(self, process: str) -> None:
        super().__init__(f"%(asctime)s {process}[{os.getpid()}] %(levelname)s %(name)s: "
                         "%(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        op = getattr(record, "op", None)
        return f"{text} op={op}" if op else text


class JSONFormatter(logging.Formatter):
    """One JSON object per record (:func:`json_line`); a traceback goes into
    ``exception``, never onto lines of its own."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = f"{process}[{os.getpid()}]"

    def format(self, record: logging.LogRecord) -> str:
        extra: dict[str, Any] = {"logger": record.name, "process": self._process}
        if record.exc_info:
            extra["exception"] = self.formatException(record.exc_info)
        return json_line(at=record.created, level=record.levelname,
                         vm=getattr(record, "vm", None), event=getattr(record, "event", None),
                         message=record.getMessage(), op=getattr(record, "op", None), **extra)


def runner_handler(handler: logging.Handler, *, vm: str, fmt: str) -> logging.Handler:
    """Set up the runner's log ``handler`` for VM ``vm`` in format ``fmt``."""
    handler.addFilter(_RecordContext(vm))
    handler.setFormatter(JSONFormatter("runner") if fmt == "json" else TextFormatter("runner"))
    return handler


def _format_of(runner_log: Path) -> str:
    """The format of an existing runner log (its last line: a JSON object or text); a
    new or empty one takes ``MAQET_LOG_FORMAT`` (text when that is unset or bad)."""
    try:
        with open(runner_log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - C.LOG_FORMAT_SNIFF_BYTES))
            tail = fh.read()
    except OSError:
        tail = b""
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    last = lines[-1] if lines else b""
    if last:
        return "json" if last.startswith(b"{") else "text"
    try:
        return log_format()
    except Exception:  # noqa: BLE001 - a log line never fails an operation
        return "text"


def decision(logger: logging.Logger, runner_log: Path, vm: str, *, wanted: str, found: str,
             action: str) -> None:
    """Log one engine decision (``wanted / found / action``) at INFO, and append it to
    the VM's runner log, in that log's format and with the current operation id. Best
    effort: a log that cannot be written never fails the operation it describes."""
    text = f"{vm}: wanted {wanted}, found {found}, {action}"
    logger.info("%s", text)
    op = ops.current_op()
    if _format_of(runner_log) == "json":
        line = json_line(at=time.time(), level="INFO", vm=vm, event="decision", message=text,
                         op=op, logger=logger.name, process=f"engine[{os.getpid()}]",
                         wanted=wanted, found=found, action=action) + "\n"
    else:
        line = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} engine[{os.getpid()}] INFO "
                f"{logger.name}: {text}" + (f" op={op}" if op else "") + "\n")
    try:
        fd = os.open(runner_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                     | os.O_NOFOLLOW, 0o600)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    except OSError:
        pass
    finally:
        os.close(fd)
