"""Library logging, as qemu.qmp does it: the package logger ``maqet_engine`` has a
``NullHandler`` (a library never prints on its own), each module logs to its child
logger, and a front end decides where it goes (the CLI's ``--verbose``: stderr).

The engine's decisions — what was *wanted*, what was *found*, which *action* was
taken — are logged at INFO and also appended to the VM's runner log, so one file
tells what happened to a VM and who asked for it, whichever process decided.

Import this module only where something is logged: importing ``logging`` costs the
CLI's fast paths (``maqet ls``) several milliseconds.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TextIO

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


def decision(logger: logging.Logger, runner_log: Path, vm: str, *, wanted: str, found: str,
             action: str) -> None:
    """Log one engine decision (``wanted / found / action``) at INFO, and append it to
    the VM's runner log. Best effort: a log that cannot be written never fails the
    operation it describes."""
    text = f"{vm}: wanted {wanted}, found {found}, {action}"
    logger.info("%s", text)
    line = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} engine[{os.getpid()}] INFO "
            f"{logger.name}: {text}\n")
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
