"""State store: creation, CRUD, events, migrations from v1, errors, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from maqet_engine.errors import AlreadyExists, StateStoreError, VMNotFound
from maqet_engine.store import Store, VMStatus
from maqet_engine.store.migrations import MIGRATIONS, SCHEMA_VERSION


def test_read_only_open_of_missing_store_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "maqet.db"
    with Store.open(db, create=False) as store:
        assert store.list_vms() == []
        assert store.get_vm("x") is None
        assert store.events("x") == []
        with pytest.raises(VMNotFound):
            store.require_vm("x")
    assert not (tmp_path / "deep").exists()


def test_new_store_is_wal_and_current(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        assert store.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "m.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_vm_crud_and_events(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        rec = store.insert_vm("a", '{"name":"a"}', "h1")
        assert rec.status is VMStatus.DEFINED and rec.spec_data == {"name": "a"}
        with pytest.raises(AlreadyExists, match="'a' already exists"):
            store.insert_vm("a", "{}", "h2")
        assert store.update_spec("a", '{"name":"a","cpu":2}', "h2").spec_hash == "h2"
        store.update_runtime("a", status=VMStatus.RUNNING, qemu_pid=42, started_hash="h2",
                             event="started", event_data={"pid": 42})
        rec = store.require_vm("a")
        assert (rec.status, rec.qemu_pid, rec.restart_required) == (VMStatus.RUNNING, 42, False)
        store.update_spec("a", "{}", "h3")
        assert store.require_vm("a").restart_required
        kinds = [e.kind for e in store.events("a")]
        assert kinds == ["defined", "redefined", "started", "redefined"]
        assert store.events("a", limit=1)[0].kind == "redefined"
        assert store.delete_vm("a") and not store.delete_vm("a")
        assert store.list_vms() == []
        with pytest.raises(ValueError):
            store.update_runtime("a", spec_hash="evil")


def test_ids_are_never_reused(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        first = store.insert_vm("a", "{}", "h").id
        store.delete_vm("a")
        assert store.insert_vm("a", "{}", "h").id > first


def test_failed_write_rolls_back(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        with pytest.raises(RuntimeError), store.write() as db:
            db.execute("INSERT INTO events (vm_name, at, kind) VALUES ('x', 0, 'k')")
            raise RuntimeError("boom")
        assert store.events("x") == []


def _make_v1(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO vms (name, spec_json, spec_hash, created_at, updated_at)"
               " VALUES ('old', '{}', 'h', 0, 0)")
    db.close()


def test_migrates_forward_from_v1_keeping_data(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    _make_v1(path)
    with Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.require_vm("old").status is VMStatus.DEFINED
        with store.write() as db:  # v2 tables exist
            db.execute("INSERT INTO storage_files VALUES ('/x', 'old', 'hdd', 0)")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StateStoreError, match="newer than this maqet understands"):
        Store.open(path)


def test_damaged_file_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateStoreError, match="move it away"):
        Store.open(path)
    assert path.read_bytes() == b"this is not sqlite" * 100  # nothing lost


def test_unwritable_directory_is_a_host_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateStoreError, match="cannot create the state store"):
        Store.open(blocker / "sub" / "m.db")


def _writer(path: str, worker: int, count: int) -> None:
    with Store.open(Path(path)) as store:
        for i in range(count):
            name = f"vm{worker}-{i}"
            store.insert_vm(name, "{}", "h")
            store.update_runtime(name, status=VMStatus.STOPPED, event="stopped")


def test_twenty_concurrent_writers_never_see_database_locked(tmp_path: Path) -> None:
    path = tmp_path / "m.db"  # not created yet: creation + migration race too
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 10)) for w in range(20)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 20
    with Store.open(path) as store:
        vms = store.list_vms()
        assert len(vms) == 200
        assert {v.status for v in vms} == {VMStatus.STOPPED}


def test_bound_ports_are_a_runtime_column(tmp_path: Path) -> None:
    """The ports QEMU bound: JSON in ``ports_json`` (added to a migrated v1 store too),
    written and cleared with the other run-state columns."""
    path = tmp_path / "m.db"
    _make_v1(path)
    bound = [{"netdev": "net0", "protocol": "tcp", "host_address": "127.0.0.1",
              "host": 40022, "guest": 22}]
    with Store.open(path) as store:
        assert store.require_vm("old").bound_ports == []
        store.update_runtime("old", ports_json=json.dumps(bound))
        assert store.require_vm("old").bound_ports == bound
        store.update_runtime("old", ports_json=None)
        assert store.require_vm("old").bound_ports == []
