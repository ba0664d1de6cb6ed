"""The state store on a real full or read-only filesystem (a small tmpfs; needs root).

Every sqlite3 failure must reach callers as one StateStoreError that says what to do,
a failed write must change nothing, and the same connection must work again once space
is back (the runner keeps one open for a VM's whole life)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from tmpfs import SmallFS, small_tmpfs

from maqet_engine import constants as C
from maqet_engine.errors import StateStoreError
from maqet_engine.store import Store, VMStatus

FREE_KIB = (0, 16, 32, 48, 64)
BIG_SPEC = '{"name": "x", "blob": "' + "y" * 20_000 + '"}'  # needs pages of its own


@pytest.fixture
def disk() -> Iterator[SmallFS]:
    with small_tmpfs("2m") as fs:
        yield fs


def _contents(store: Store) -> tuple[list[tuple[str, str]], list[str]]:
    vms = [(r.name, r.status.value) for r in store.list_vms()]
    return vms, [e.kind for e in store.events("a", limit=1000)]


@pytest.mark.parametrize("free_kib", FREE_KIB)
def test_a_write_on_a_full_disk_is_one_store_error_and_changes_nothing(disk, free_kib):
    path = disk.root / C.DB_FILE
    with Store.open(path) as store:
        store.insert_vm("a", "{}", "h")
        before = _contents(store)
        disk.set_free(free_kib)
        failures = 0
        for attempt in range(40):  # until the disk is really full, whatever free_kib was
            try:
                store.insert_vm(f"big{attempt}", BIG_SPEC, "h")
                store.update_runtime("a", status=VMStatus.RUNNING, event="started",
                                     event_data={"blob": "z" * 8000})
            except StateStoreError as err:
                failures += 1
                assert "disk is full" in str(err) or "free space" in str(err), err
                assert "\n" not in str(err)
                break
        assert failures == 1  # 40 x 28 KB never fit in 64 KiB
        disk.unfill()
        # The same connection works again, and what it holds is all-or-nothing.
        store.update_runtime("a", status=VMStatus.STOPPED, event="stopped")
        vms, events = _contents(store)
        assert vms[0] == ("a", "stopped") and events[: len(before[1])] == before[1]
        assert all(name == "a" or name.startswith("big") for name, _ in vms)
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"


def test_reads_work_on_a_full_disk_with_no_store_open(disk):
    """SQLite needs 32 KiB for the WAL index (-shm) before it reads anything; with no
    other connection open that file is gone and cannot be sized on a full disk."""
    path = disk.root / C.DB_FILE
    with Store.open(path) as store:
        store.insert_vm("a", "{}", "h")
    assert not (disk.root / f"{C.DB_FILE}-shm").exists()
    disk.set_free(0)
    with Store.open(path, create=False) as store:
        assert [r.name for r in store.list_vms()] == ["a"]
        with pytest.raises(StateStoreError, match="disk is full.*free space"):
            store.update_runtime("a", status=VMStatus.STOPPED)
    with pytest.raises(StateStoreError, match="free space"):
        Store.open(path, create=True)
    disk.unfill()
    with Store.open(path) as store:
        store.update_runtime("a", status=VMStatus.STOPPED)
        assert store.require_vm("a").status == VMStatus.STOPPED


def test_a_read_only_filesystem_reads_and_refuses_writes_in_one_line(disk):
    path = disk.root / C.DB_FILE
    with Store.open(path) as store:
        store.insert_vm("a", "{}", "h")
    with disk.read_only():
        with Store.open(path, create=False) as store:
            assert [r.name for r in store.list_vms()] == ["a"]
            with pytest.raises(StateStoreError, match="read-only") as info:
                store.insert_vm("b", "{}", "h")
            assert "\n" not in str(info.value)
        with pytest.raises(StateStoreError, match="read-only"):
            Store.open(path, create=True)
        with pytest.raises(StateStoreError, match="read-only"):  # no store yet either
            Store.open(disk.root / "new" / C.DB_FILE, create=True)
    with Store.open(path) as store:  # writable again: nothing was lost
        assert [r.name for r in store.list_vms()] == ["a"]


def test_every_sqlite_error_of_a_write_is_a_store_error(tmp_path):
    """Not only full disks: a constraint or a closed database inside ``write()``."""
    with Store.open(tmp_path / C.DB_FILE) as store:
        with pytest.raises(StateStoreError), store.write() as db:
            db.execute("INSERT INTO no_such_table VALUES (1)")
        with store.write() as db:  # the connection is usable afterwards
            db.execute("INSERT INTO events (vm_name, at, kind) VALUES ('x', 0, 'k')")
        assert [e.kind for e in store.events("x")] == ["k"]
        assert not store._db.in_transaction  # type: ignore[union-attr]


def test_rollback_after_sqlite_already_rolled_back_is_not_an_error(tmp_path):
    """SQLite itself ends the transaction on some errors (a full disk); a ROLLBACK then
    raises "no transaction is active", which must not replace the real error."""
    with Store.open(tmp_path / C.DB_FILE) as store:
        with pytest.raises(StateStoreError, match="no_such_boom"), store.write() as db:
            db.execute("ROLLBACK")  # as SQLite does on SQLITE_FULL
            db.execute("INSERT INTO no_such_boom VALUES (1)")
        with pytest.raises(StateStoreError, match="no transaction"), store.write() as db:
            db.execute("ROLLBACK")  # then COMMIT fails, and so would its ROLLBACK
        with pytest.raises(RuntimeError, match="boom"), store.write() as db:
            db.execute("ROLLBACK")
            raise RuntimeError("boom")
        with pytest.raises(sqlite3.Error, match="no transaction"):
            store._db.execute("ROLLBACK")  # type: ignore[union-attr]  # the raw behaviour
