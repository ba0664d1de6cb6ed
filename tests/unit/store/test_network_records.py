"""Network rows (schema v4): CRUD, endpoint claims all-or-nothing, migration from v3."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from maqet_engine.errors import AlreadyExists, NetworkNotFound, StateConflict
from maqet_engine.store import Store
from maqet_engine.store import network_records as nets
from maqet_engine.store.migrations import MIGRATIONS, SCHEMA_VERSION


def test_network_crud_and_endpoint_claims(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        assert nets.list_networks(store) == []
        lab = nets.insert_network(store, "lab", '{"name":"lab"}', "h1", ["udp:239.255.1.2:20001"])
        assert (lab.name, lab.spec_data, lab.spec_hash) == ("lab", {"name": "lab"}, "h1")
        with pytest.raises(AlreadyExists, match="'lab' already exists"):
            nets.insert_network(store, "lab", "{}", "h", [])
        # Another network claiming the same group:port is refused, and nothing of it stays.
        with pytest.raises(StateConflict, match="239.255.1.2:20001, which network 'lab'"):
            nets.insert_network(store, "lab2", "{}", "h", ["udp:239.255.1.2:20001"])
        assert nets.get_network(store, "lab2") is None
        nets.update_network(store, "lab", "{}", "h2", ["udp:239.255.1.2:20002"])
        assert nets.endpoints_of(store, "lab") == ["udp:239.255.1.2:20002"]
        assert nets.require_network(store, "lab").spec_hash == "h2"
        nets.insert_network(store, "lab2", "{}", "h", ["udp:239.255.1.2:20001"])  # free now
        with pytest.raises(StateConflict):  # an update that would clash keeps the old row
            nets.update_network(store, "lab", "{}", "h3", ["udp:239.255.1.2:20001"])
        assert nets.require_network(store, "lab").spec_hash == "h2"
        assert nets.endpoints_of(store, "lab") == ["udp:239.255.1.2:20002"]
        assert [n.name for n in nets.list_networks(store)] == ["lab", "lab2"]
        assert nets.delete_network(store, "lab") and not nets.delete_network(store, "lab")
        assert nets.endpoints_of(store, "lab") == []
        with pytest.raises(NetworkNotFound, match="no network named 'lab'"):
            nets.require_network(store, "lab")
        with pytest.raises(NetworkNotFound):
            nets.update_network(store, "lab", "{}", "h", [])


def test_missing_store_reads_as_no_networks(tmp_path: Path) -> None:
    with Store.open(tmp_path / "none" / "m.db", create=False) as store:
        assert nets.list_networks(store) == [] and nets.get_network(store, "x") is None
    assert not (tmp_path / "none").exists()


def test_migrates_a_v3_store_keeping_its_vms(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    db = sqlite3.connect(path, isolation_level=None)
    for number, step in enumerate(MIGRATIONS[:3], start=1):
        step(db)
        db.execute(f"PRAGMA user_version = {number}")
    db.execute("INSERT INTO vms (name, spec_json, spec_hash, created_at, updated_at)"
               " VALUES ('old', '{}', 'h', 0, 0)")
    db.close()
    with Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 4
        old = store.require_vm("old")
        assert old.started_networks is None and not old.restart_required
        nets.insert_network(store, "lab", "{}", "h", [])
        store.update_runtime("old", started_networks='{"lab": "h"}')
        assert store.require_vm("old").started_networks == '{"lab": "h"}'


def test_delete_is_refused_by_its_guard_in_the_same_transaction(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        nets.insert_network(store, "lab", "{}", "h", ["udp:239.255.1.2:20001"])
        store.insert_vm("web", '{"name": "web"}', "h")
        seen = []

        def guard(vms):
            seen.extend(vm.name for vm in vms)
            raise StateConflict("in use")

        with pytest.raises(StateConflict, match="in use"):
            nets.delete_network(store, "lab", guard=guard)
        assert seen == ["web"] and nets.get_network(store, "lab") is not None
        assert nets.endpoints_of(store, "lab") == ["udp:239.255.1.2:20001"]
        assert nets.delete_network(store, "lab", guard=lambda vms: None)
