"""Facade calls beyond ``apply()``: run-state shortcuts and requests to a running VM
(QMP, keys, text, console, screen), and snapshots. Each returns a :class:`Result`.
Reads live in :mod:`.reading` (they must stay light: ``maqet ls``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.engine import lifecycle
from maqet_engine.engine.api import Progress, apply
from maqet_engine.engine.context import EngineContext, operation
from maqet_engine.engine.lifecycle import call_vm, require_vm
from maqet_engine.engine.result import Result
from maqet_engine.engine.view import vm_view
from maqet_engine.errors import UsageError

# QMP commands that only read state (decides ``changed``): every ``query-*`` plus these.
READ_ONLY_QMP_PREFIXES = ("query-", "x-query-")
READ_ONLY_QMP_COMMANDS = frozenset({
    "qom-get", "qom-list", "qom-list-types", "qom-list-properties", "device-list-properties",
})
SCREENDUMP_FORMATS = ("png", "ppm")


# --- run state ---------------------------------------------------------------------------
@operation
def start(ctx: EngineContext, name: str, *, progress: Progress | None = None) -> Result:
    """``apply(state="running")``: start, or resume a paused VM. ``progress``: see
    :func:`~maqet_engine.engine.api.apply` (an image downloaded for a disk)."""
    return apply(ctx, name=name, state="running", progress=progress)


@operation
def stop(ctx: EngineContext, name: str, *, timeout: float = C.STOP_TIMEOUT_S,
         force: bool = False) -> Result:
    """``apply(state="stopped")``: ACPI powerdown, then QMP quit, then SIGKILL."""
    return apply(ctx, name=name, state="stopped", timeout=timeout, force=force)


@operation
def restart(ctx: EngineContext, name: str, *, timeout: float = C.STOP_TIMEOUT_S,
            force: bool = False, progress: Progress | None = None) -> Result:
    return apply(ctx, name=name, state="restarted", timeout=timeout, force=force,
                 progress=progress)


@operation
def pause(ctx: EngineContext, name: str) -> Result:
    """Pause a running VM's vCPUs (not a desired state of a stopped VM: it must run)."""
    return _paused(ctx, name, paused=True)


@operation
def resume(ctx: EngineContext, name: str) -> Result:
    return _paused(ctx, name, paused=False)


def _paused(ctx: EngineContext, name: str, *, paused: bool) -> Result:
    result = Result(name=name, state="paused" if paused else "running")
    with ctx.open_store(create=False) as store:
        result.extend(lifecycle.set_paused(ctx.paths, store, name, paused=paused,
                                           check_mode=ctx.check_mode))
        result.vm = vm_view(store.require_vm(name), ctx.paths)
    return result


# --- requests to a running VM ------------------------------------------------------------
def is_read_only(command: str) -> bool:
    """Whether a QMP command only reads state (it then never reports a change)."""
    return command.startswith(READ_ONLY_QMP_PREFIXES) or command in READ_ONLY_QMP_COMMANDS


@operation
def qmp(ctx: EngineContext, name: str, command: str, arguments: dict[str, Any] | None = None,
        *, read_only: bool | None = None, timeout: float = C.IPC_TIMEOUT_S) -> Result:
    """Run one QMP command through the VM's runner (``data``: QMP's ``return``).
    ``changed`` unless it only reads (:func:`is_read_only`, or ``read_only``). In check
    mode a command that would change something is not sent."""
    if read_only is None:
        read_only = is_read_only(command)
    result = Result(name=name, state="qmp")
    if not read_only:
        result.record("qmp", command=command)
    if ctx.check_mode and not read_only:
        require_vm(ctx, name)
        return result
    result.data = call_vm(ctx, name, "qmp", command=command, arguments=arguments or {},
                          ipc_timeout=timeout)
    return result


@operation
def send_keys(ctx: EngineContext, name: str, keys: list[str], *,
              timeout: float = C.IPC_TIMEOUT_S) -> Result:
    """Press key chords (``ctrl-alt-delete``, ``ret``, ...) on the VM's keyboard."""
    return _input(ctx, name, "keys", "send_keys", timeout, keys=list(keys))


@operation
def type_text(ctx: EngineContext, name: str, text: str, *,
              timeout: float = C.IPC_TIMEOUT_S) -> Result:
    """Type ``text`` on the VM's keyboard (US layout)."""
    return _input(ctx, name, "type", "type_text", timeout, text=text)


def _input(ctx: EngineContext, name: str, method: str, verb: str, timeout: float,
           **params: Any) -> Result:
    result = Result(name=name, state=verb)
    if ctx.check_mode:
        require_vm(ctx, name)
        result.record(verb, count=len(params.get("keys") or params.get("text") or ""))
        return result
    # The runner returns once every key is in the guest (held SEND_KEY_HOLD_MS each, and
    # a QMP round trip per press and release): long texts take their time.
    count = len(params.get("keys") or params.get("text") or "")
    typing = count * (C.SEND_KEY_HOLD_MS / 1000 + C.SEND_KEY_ROUND_TRIPS_S)
    reply = call_vm(ctx, name, method, ipc_timeout=timeout + typing, **params)
    result.record(verb, count=reply.get("sent"))
    result.data = reply
    return result


@operation
def write_console(ctx: EngineContext, name: str, text: str, *,
                  timeout: float = C.IPC_TIMEOUT_S) -> Result:
    """Write ``text`` to the VM's serial console (the guest reads it as typed on its
    serial line; ``\n`` ends a line)."""
    result = Result(name=name, state="console")
    if ctx.check_mode:
        require_vm(ctx, name)
        result.record("write_console", count=len(text.encode()))
        return result
    reply = call_vm(ctx, name, "serial_write", text=text, ipc_timeout=timeout)
    result.record("write_console", count=reply.get("sent"))
    result.data = reply
    return result


@operation
def screendump(ctx: EngineContext, name: str, dest: str | os.PathLike[str], *,
               image_format: str = C.SCREENDUMP_FORMAT,
               timeout: float = C.IPC_TIMEOUT_S) -> Result:
    """Save the VM's screen to ``dest``. QEMU writes a temporary file beside it, which
    replaces ``dest`` only when the picture differs: ``changed`` means "the file
    changed" (a blinking cursor alternates between two pictures, so two dumps of an
    idle console may still differ). ``data``: path, format, sha1."""
    if image_format not in SCREENDUMP_FORMATS:
        raise UsageError(f"unknown screendump format {image_format!r}",
                         hint=f"use one of: {', '.join(SCREENDUMP_FORMATS)}")
    target = Path(os.path.abspath(dest))  # the caller's directory, not QEMU's
    if not target.parent.is_dir():
        raise UsageError(f"screendump: directory {target.parent} does not exist")
    temporary = target.with_name(f".{target.name}.maqet-{os.getpid()}.tmp")
    result = Result(name=name, state="screendump")
    try:
        call_vm(ctx, name, "screendump", path=str(temporary), format=image_format,
                ipc_timeout=timeout)
        new, old = _sha1(temporary), _sha1(target)
        if new != old:
            result.record("screendump", path=str(target))
            if not ctx.check_mode:
                os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()
    result.data = {"path": str(target), "format": image_format, "checksum": new}
    return result


def _sha1(path: Path) -> str | None:
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(C.SERIAL_READ_CHUNK), b""):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


# --- files maqet created ----------------------------------------------------------------
@operation
def purge_orphaned_storage(ctx: EngineContext) -> Result:
    """Delete the files maqet created for VMs that no longer exist."""
    from maqet_engine.storage import purge_orphans

    result = Result(name=None, state="absent")
    with ctx.open_store(create=False) as store:
        for path in purge_orphans(ctx.paths, store, check_mode=ctx.check_mode):
            result.record("delete_file", path=str(path))
    result.data = [a["path"] for a in result.actions]
    return result


# --- snapshots ---------------------------------------------------------------------------
@operation
def snapshot(ctx: EngineContext, vm: str, name: str, *, state: str = "present",
             drive: str | None = None, retention: int | None = None,
             timeout: float = C.SNAPSHOT_JOB_TIMEOUT_S, live: bool | None = None,
             progress: Any = None) -> Result:
    """Converge snapshot ``name`` of VM ``vm``: ``present`` (create), ``reverted`` (load
    it: always a change), ``absent`` (delete). See docs/snapshots.md."""
    from maqet_engine.snapshots import ensure_snapshot

    return ensure_snapshot(ctx, vm, name, state=state, drive=drive, retention=retention,
                           timeout=timeout, live=live, progress=progress)
