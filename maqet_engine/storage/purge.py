"""Deleting storage: only what maqet created, never a disk the user brought.

``purge_files`` is what ``maqet rm --purge`` calls for one VM; ``purge_orphans`` is
``maqet storage rm --orphaned`` (files whose VM row is gone). A registered file that
another defined VM's definition still uses is kept (and stays registered): deleting
it would destroy that VM's disk.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from maqet_engine.paths import Paths
from maqet_engine.storage.claims import file_uses
from maqet_engine.store import Store
from maqet_engine.store import storage_records as records


def _used_by_others(store: Store, vm_name: str | None) -> dict[str, str]:
    """Real path -> name of a defined VM (other than ``vm_name``) that uses it."""
    used: dict[str, str] = {}
    for record in store.list_vms():
        if record.name != vm_name:
            for path, _storage, _writes, _how in file_uses(record.spec_data):
                used.setdefault(path, record.name)
    return used


def _delete(store: Store, rows: list[records.StorageFileRecord], vm_name: str | None, *,
            check_mode: bool) -> list[Path]:
    used = _used_by_others(store, vm_name)
    deleted: list[Path] = []
    for row in rows:
        path = Path(row.path)
        if os.path.realpath(path) in used:
            continue
        if path.exists() or path.is_symlink():
            deleted.append(path)
            if not check_mode:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if not check_mode:
            records.forget_file(store, path)
    return deleted


def purge_files(paths: Paths, store: Store, vm_name: str, *,
                check_mode: bool = False) -> list[Path]:
    """Delete the files maqet created for ``vm_name`` (its disks, its logs, the guest's
    known_hosts), forget them and the VM's snapshot metadata, and remove the VM's
    directory when nothing else is left in it. User-supplied files, also inside that
    directory, are kept.

    :return: the files deleted (in check mode: that would be deleted).
    """
    deleted = _delete(store, records.files_of(store, vm_name), vm_name, check_mode=check_mode)
    data = paths.vm_data(vm_name)
    for log in (data.runner_log, data.qemu_log, data.serial_log, data.known_hosts):
        if log.exists():
            deleted.append(log)
            if not check_mode:
                with contextlib.suppress(FileNotFoundError):
                    log.unlink()
    if not check_mode:
        records.forget_snapshots_of(store, vm_name)
        _remove_empty_dirs(data.root)
    return deleted


def purge_orphans(paths: Paths, store: Store, *, check_mode: bool = False) -> list[Path]:
    """Delete registered files whose VM is no longer defined, and forget them (rows of
    files already gone are forgotten too). Returns the files deleted."""
    orphans = records.orphaned_files(store)
    deleted = _delete(store, orphans, None, check_mode=check_mode)
    if not check_mode:
        for vm_name in sorted({row.vm_name for row in orphans}):
            if store.get_vm(vm_name) is None:
                _remove_empty_dirs(paths.vm_data(vm_name).root)
    return deleted


def _remove_empty_dirs(root: Path) -> None:
    """Remove ``root`` and its subdirectories bottom-up where they are empty."""
    if not root.is_dir():
        return
    for directory, _subdirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):
            os.rmdir(directory)
