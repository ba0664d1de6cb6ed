"""Facade reads: the VM list, one VM, its status, its logs, the files maqet created and
snapshot lists. ``changed`` is always false and ``data`` holds what was read. Reading
never writes the store, and this module stays light: ``maqet ls`` imports it, so the
definition package, logging and the runner client load only where needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from maqet_engine.engine import runstate
from maqet_engine.engine.context import EngineContext, operation
from maqet_engine.engine.result import Result
from maqet_engine.engine.view import vm_view
from maqet_engine.errors import UsageError

LOGS = ("serial", "qemu", "runner")


@operation
def list_vms(ctx: EngineContext, *, live: bool = False, argv: bool = False) -> Result:
    """Every VM, observed (``data``: a list of VM views, by name). ``live`` asks each
    running VM's runner for its own report too (one IPC call each)."""
    with ctx.open_store(create=False, verify=False) as store:
        records = store.list_vms()
        networks = _networks(store)
    views = [_view(ctx, record, live=live, argv=argv, networks=networks)
             for record in records]
    return Result(name=None, data=views)


@operation
def show(ctx: EngineContext, name: str, *, live: bool = False) -> Result:
    """One VM's view (``vm`` and ``data``), with its QEMU command line."""
    with ctx.open_store(create=False, verify=False) as store:
        record = store.require_vm(name)
        networks = _networks(store)
    view = _view(ctx, record, live=live, argv=True, networks=networks)
    return Result(name=name, vm=view, data=view)


@operation
def status(ctx: EngineContext, name: str, *, events: int = 5) -> Result:
    """The run status now: observed, plus the runner's report and recent events."""
    with ctx.open_store(create=False, verify=False) as store:
        record = store.require_vm(name)
        recent = [e.to_dict() for e in store.events(name, limit=events)]
    from maqet_engine.engine.lifecycle import live_status

    live = live_status(ctx.paths, record)
    view = vm_view(record, ctx.paths)
    data = {"name": name, **live, "ports": view["ports"], "known_hosts": view["known_hosts"],
            "events": recent}
    return Result(name=name, data=data, vm=view)


def _view(ctx: EngineContext, record: Any, *, live: bool, argv: bool,
          networks: Any) -> dict[str, Any]:
    run = runstate.probe(ctx.paths, record)
    extra = None
    if live and run.runner_alive:
        from maqet_engine.engine.lifecycle import live_status

        extra = live_status(ctx.paths, record)
    return vm_view(record, ctx.paths, run, live=extra, with_argv=argv, networks=networks)


def _networks(store: Any) -> dict[str, Any]:
    from maqet_engine.engine.networks import network_index

    return network_index(store)


def log_path(ctx: EngineContext, name: str, which: str) -> Path:
    """Where one of a VM's logs (``serial``, ``qemu``, ``runner``) is."""
    if which not in LOGS:
        raise UsageError(f"unknown log {which!r}", hint=f"use one of: {', '.join(LOGS)}")
    with ctx.open_store(create=False) as store:
        store.require_vm(name)
    data = ctx.paths.vm_data(name)
    return {"serial": data.serial_log, "qemu": data.qemu_log, "runner": data.runner_log}[which]


def read_log(ctx: EngineContext, name: str, which: str, *, lines: int | None,
             follow: bool) -> Iterator[bytes]:
    """A log's tail (``lines`` None: all of it), then with ``follow`` what is appended
    (blocking on inotify; the caller stops iterating to end it)."""
    from maqet_engine.engine.logs import follow as follow_log
    from maqet_engine.engine.logs import tail_bytes

    path = log_path(ctx, name, which)
    offset = 0
    if path.exists():
        content, offset = tail_bytes(path, lines)
        yield content
    if follow:
        yield from follow_log(path, offset)


# --- files maqet created ---------------------------------------------------------------
@operation
def storage_files(ctx: EngineContext, *, orphaned: bool = False) -> Result:
    """The disk images maqet created, with their owner VM (``data``: one entry each:
    path, vm, storage, created_at, exists, size, allocated, orphaned)."""
    from maqet_engine.store import storage_records as records

    with ctx.open_store(create=False) as store:
        orphans = records.orphaned_files(store)
        rows = orphans if orphaned else records.all_files(store)
    orphan_paths = {r.path for r in orphans}
    entries = []
    for row in rows:
        entry = row.to_dict()
        try:
            found = os.stat(row.path)
            entry.update(exists=True, size=found.st_size, allocated=found.st_blocks * 512)
        except OSError:
            entry.update(exists=False, size=None, allocated=None)
        entry["orphaned"] = row.path in orphan_paths
        entries.append(entry)
    return Result(name=None, state="list", data=entries)


@operation
def list_snapshots(ctx: EngineContext, vm: str, drive: str | None = None) -> Result:
    """The VM's snapshots (``data``), oldest first, read from the images themselves."""
    from maqet_engine.snapshots import list_snapshots as listed

    return listed(ctx, vm, drive)
