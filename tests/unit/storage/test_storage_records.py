"""Store rows of created files and snapshot metadata (real SQLite, no QEMU)."""

from __future__ import annotations

from pathlib import Path

from maqet_engine.paths import resolve_paths
from maqet_engine.store import Store
from maqet_engine.store import storage_records as records


def _store() -> Store:
    return Store.open(resolve_paths().db)


def test_files_are_registered_per_vm_and_orphaned_when_the_vm_goes(maqet_home: Path):
    with _store() as store:
        store.insert_vm("a", "{}", "h")
        store.insert_vm("b", "{}", "h")
        records.register_file(store, maqet_home / "x" / ".." / "a.qcow2", "a", "hdd")
        records.register_file(store, maqet_home / "b.qcow2", "b", "hdd")
        assert [r.path for r in records.files_of(store, "a")] == [str(maqet_home / "a.qcow2")]
        assert records.is_created_by_maqet(store, maqet_home / "a.qcow2")
        assert records.orphaned_files(store) == []
        store.delete_vm("b")
        assert [r.vm_name for r in records.orphaned_files(store)] == ["b"]
        assert records.forget_file(store, maqet_home / "b.qcow2")
        assert not records.forget_file(store, maqet_home / "b.qcow2")
        assert [r.vm_name for r in records.all_files(store)] == ["a"]


def test_snapshot_metadata_round_trip(maqet_home: Path):
    with _store() as store:
        records.record_snapshot(store, "a", "s2", vm_state=True, size=10, created_at=2.0)
        records.record_snapshot(store, "a", "s1", vm_state=False, size=None, created_at=1.0)
        records.record_snapshot(store, "a", "s1", "hdd", vm_state=False, size=None)
        assert [r.name for r in records.snapshots_of(store, "a", "")] == ["s1", "s2"]
        assert len(records.snapshots_of(store, "a")) == 3
        row = records.get_snapshot(store, "a", "s2")
        assert row is not None and row.vm_state and row.size == 10
        assert records.forget_snapshot(store, "a", "s2")
        assert records.get_snapshot(store, "a", "s2") is None
        assert records.forget_snapshots_of(store, "a") == 2


def test_reads_on_a_missing_store_are_empty_and_create_nothing(maqet_home: Path):
    with Store.open(resolve_paths().db, create=False) as store:
        assert records.all_files(store) == []
        assert records.orphaned_files(store) == []
        assert records.snapshots_of(store, "a") == []
    assert not maqet_home.exists()
