"""Store rows of files maqet created and of snapshot metadata (schema v2 tables
``storage_files`` and ``snapshots``), as functions taking a :class:`Store`.

Files: every disk image maqet creates is registered with its owner VM, so that a
purge deletes exactly those and never a disk the user brought. A registered file
whose VM row is gone is *orphaned*.

Snapshots: the images hold the snapshots themselves (the truth); these rows add what
an image does not say: who made the snapshot through maqet and when. ``drive`` is
``''`` for a VM-wide snapshot (all of the VM's qcow2 disks, with RAM when live).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from maqet_engine.frozen import Frozen
from maqet_engine.store.db import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3
    from typing import Any

VM_WIDE = ""  # the ``drive`` of a VM-wide snapshot


class StorageFileRecord(Frozen):
    __slots__ = ("path", "vm_name", "storage", "created_at")
    path: str
    vm_name: str
    storage: str
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StorageFileRecord:
        return cls(path=row["path"], vm_name=row["vm_name"], storage=row["storage"],
                   created_at=row["created_at"])

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "vm": self.vm_name, "storage": self.storage,
                "created_at": self.created_at}


class SnapshotRecord(Frozen):
    __slots__ = ("vm_name", "name", "drive", "created_at", "vm_state", "size")
    vm_name: str
    name: str
    drive: str
    created_at: float
    vm_state: bool
    size: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SnapshotRecord:
        return cls(vm_name=row["vm_name"], name=row["name"], drive=row["drive"],
                   created_at=row["created_at"], vm_state=bool(row["vm_state"]),
                   size=row["size"])


def _key(path: str | os.PathLike[str]) -> str:
    """Files are registered by absolute, normalized path (symlinks kept as given)."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


# --- files ----------------------------------------------------------------------------
def register_file(store: Store, path: str | os.PathLike[str], vm_name: str,
                  storage: str) -> None:
    """Record that maqet created ``path`` for ``vm_name``'s storage entry ``storage``
    (a file registered again changes owner: the newest creation wins)."""
    with store.write() as db:
        db.execute(
            "INSERT INTO storage_files (path, vm_name, storage, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (path) DO UPDATE SET vm_name = excluded.vm_name,"
            " storage = excluded.storage, created_at = excluded.created_at",
            (_key(path), vm_name, storage, time.time()),
        )


def forget_file(store: Store, path: str | os.PathLike[str]) -> bool:
    with store.write() as db:
        return db.execute("DELETE FROM storage_files WHERE path = ?", (_key(path),)).rowcount > 0


def get_file(store: Store, path: str | os.PathLike[str]) -> StorageFileRecord | None:
    rows = store.query("SELECT * FROM storage_files WHERE path = ?", (_key(path),))
    return StorageFileRecord.from_row(rows[0]) if rows else None


def files_of(store: Store, vm_name: str) -> list[StorageFileRecord]:
    rows = store.query("SELECT * FROM storage_files WHERE vm_name = ? ORDER BY path", (vm_name,))
    return [StorageFileRecord.from_row(r) for r in rows]


def all_files(store: Store) -> list[StorageFileRecord]:
    rows = store.query("SELECT * FROM storage_files ORDER BY vm_name, path")
    return [StorageFileRecord.from_row(r) for r in rows]


def orphaned_files(store: Store) -> list[StorageFileRecord]:
    """Registered files whose VM is no longer defined."""
    rows = store.query(
        "SELECT f.* FROM storage_files f LEFT JOIN vms v ON v.name = f.vm_name"
        " WHERE v.id IS NULL ORDER BY f.vm_name, f.path")
    return [StorageFileRecord.from_row(r) for r in rows]


def is_created_by_maqet(store: Store, path: str | Path) -> bool:
    return get_file(store, path) is not None


# --- snapshots --------------------------------------------------------------------------
def record_snapshot(store: Store, vm_name: str, name: str, drive: str = VM_WIDE, *,
                    vm_state: bool, size: int | None, created_at: float | None = None,
                    ) -> None:
    """Insert or replace the metadata of one snapshot."""
    with store.write() as db:
        db.execute(
            "INSERT OR REPLACE INTO snapshots (vm_name, name, drive, created_at, vm_state, size)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (vm_name, name, drive, time.time() if created_at is None else created_at,
             int(vm_state), size),
        )


def forget_snapshot(store: Store, vm_name: str, name: str, drive: str = VM_WIDE) -> bool:
    with store.write() as db:
        cur = db.execute("DELETE FROM snapshots WHERE vm_name = ? AND name = ? AND drive = ?",
                         (vm_name, name, drive))
        return cur.rowcount > 0


def forget_snapshots_of(store: Store, vm_name: str) -> int:
    """Drop every snapshot row of a VM (its images are gone)."""
    with store.write() as db:
        return db.execute("DELETE FROM snapshots WHERE vm_name = ?", (vm_name,)).rowcount


def get_snapshot(store: Store, vm_name: str, name: str,
                 drive: str = VM_WIDE) -> SnapshotRecord | None:
    rows = store.query("SELECT * FROM snapshots WHERE vm_name = ? AND name = ? AND drive = ?",
                       (vm_name, name, drive))
    return SnapshotRecord.from_row(rows[0]) if rows else None


def snapshots_of(store: Store, vm_name: str, drive: str | None = None) -> list[SnapshotRecord]:
    """Snapshot rows of a VM, oldest first; ``drive`` None = every scope."""
    if drive is None:
        rows = store.query("SELECT * FROM snapshots WHERE vm_name = ?"
                           " ORDER BY created_at, name", (vm_name,))
    else:
        rows = store.query("SELECT * FROM snapshots WHERE vm_name = ? AND drive = ?"
                           " ORDER BY created_at, name", (vm_name, drive))
    return [SnapshotRecord.from_row(r) for r in rows]
