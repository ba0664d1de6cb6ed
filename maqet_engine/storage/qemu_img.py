"""qemu-img, run with structured (JSON) output only; its failures become maqet errors.

Nothing here parses human-readable tables: image facts come from
``qemu-img info --output=json`` (which also lists internal snapshots).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import HostError, OperationTimeout, RuntimeFailure, StateConflict

_LOCK_MARKERS = ('Failed to get "write" lock', 'Failed to get shared "write" lock',
                 "Is another process using the image")


def binary() -> str:
    path = shutil.which(C.QEMU_IMG)
    if path is None:
        raise HostError(f"{C.QEMU_IMG} is not installed",
                        hint="install it (Debian/Ubuntu: apt install qemu-utils)")
    return path


def run(args: list[str], *, what: str, timeout: float = C.QEMU_IMG_TIMEOUT_S) -> str:
    """Run ``qemu-img ARGS``; returns stdout.

    :param what: the operation in words, for messages ("create disk hdd").
    :raise StateConflict: the image is locked by another process (a running QEMU).
    :raise OperationTimeout: qemu-img ran longer than ``timeout``.
    :raise RuntimeFailure: any other qemu-img failure, with its message.
    """
    argv = [binary(), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise OperationTimeout(f"{what}: qemu-img {args[0]} still running after {timeout:g} s",
                               hint="the image may be very large or its storage slow") from err
    except OSError as err:
        raise HostError(f"{what}: cannot run {argv[0]}: {err.strerror}") from err
    if proc.returncode != 0:
        message = " | ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())
        message = message.removeprefix("qemu-img: ") or f"exit code {proc.returncode}"
        if any(marker in proc.stderr for marker in _LOCK_MARKERS):
            raise StateConflict(f"{what}: the image is in use by another process ({message})",
                                hint="stop the VM that uses it first")
        raise RuntimeFailure(f"{what}: {message}")
    return proc.stdout


def info(path: Path | str, *, what: str) -> dict[str, Any]:
    """``qemu-img info --output=json`` of one image (no backing chain)."""
    data: dict[str, Any] = json.loads(run(["info", "--output=json", str(path)], what=what))
    return data


def create(path: Path, fmt: str, *, size: int | None, backing: str | None = None,
           backing_fmt: str | None = None, what: str) -> None:
    args = ["create", "-q", "-f", fmt]
    if backing is not None:
        args += ["-b", backing, "-F", backing_fmt or "raw"]
    args.append(str(path))
    if size is not None:
        args.append(str(size))
    run(args, what=what)


def snapshot(op: str, path: Path | str, tag: str, *, what: str,
             timeout: float = C.QEMU_IMG_TIMEOUT_S) -> None:
    """Internal snapshot operation: ``create`` (-c), ``apply`` (-a), ``delete`` (-d)."""
    flag = {"create": "-c", "apply": "-a", "delete": "-d"}[op]
    run(["snapshot", "-q", flag, tag, str(path)], what=what, timeout=timeout)


def snapshots(path: Path | str, *, what: str) -> list[dict[str, Any]]:
    """The image's internal snapshots as qemu-img reports them (``name``, ``id``,
    ``date-sec``, ``date-nsec``, ``vm-state-size``, ``vm-clock-sec``...)."""
    return list(info(path, what=what).get("snapshots") or [])
