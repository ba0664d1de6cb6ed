"""Live snapshots of the running tiny guest through its runner: state written in the
guest's RAM (its root is a ramfs) is back after loading the snapshot; delete,
retention, one-disk live snapshots; and the offline view of the same images agrees."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from guest import wait_console, wait_marker

from maqet_engine.engine import apply, lifecycle
from maqet_engine.engine.context import EngineContext
from maqet_engine.errors import StateConflict
from maqet_engine.snapshots import ensure_snapshot, list_snapshots
from maqet_engine.storage import prepare_storage
from maqet_engine.store import Store

pytestmark = pytest.mark.qemu
# Bounded wait (seconds) and what it usually takes here under TCG.
JOB_TIMEOUT = 60.0  # a live snapshot of this 256 MiB guest: ~1.2 s create, ~0.2 s load
VMFactory = Any  # the 'vms' fixture of tests/integration/conftest.py


def shell(vms: VMFactory, command: str, done: str, since: int) -> tuple[str, int]:
    """Run ``command`` in the guest shell; wait for the regex ``done`` after ``since``."""
    with Store.open(vms.paths.db) as store:
        lifecycle.call(vms.paths, store, "vm1", "serial_write", text=command + "\n")
    return wait_console(vms.paths, "vm1", done, since=since)


@pytest.fixture
def running(vms: VMFactory) -> EngineContext:
    vms.define("vm1", storage=[{"name": "hdd", "type": "qcow2", "size": "16M"},
                               {"name": "data", "type": "qcow2", "size": "16M"}])
    ctx = EngineContext(paths=vms.paths)
    result = apply(ctx, name="vm1", state="running")  # creates both disks, then starts
    assert result.actions == ["created disk hdd (16M)", "created disk data (16M)", "started"]
    wait_marker(vms.paths, "vm1")
    return ctx


def test_live_snapshot_brings_back_the_guest_state(vms: VMFactory, running: EngineContext):
    ctx = running
    _, offset = shell(vms, "echo before > /state; echo W-$((1+1))", r"W-2", 0)
    result = ensure_snapshot(ctx, "vm1", "s1", timeout=JOB_TIMEOUT)
    assert result["live"] and result["actions"] == ["created snapshot s1 (RAM and disks hdd, "
                                                    "data)"]
    snap = result["snapshot"]
    assert snap["vm_state"] and snap["vm_state_drive"] == "hdd" and snap["complete"]
    assert snap["size"] > 0
    _, offset = shell(vms, "echo after > /state; echo W-$((2+2))", r"W-4", offset)

    result = ensure_snapshot(ctx, "vm1", "s1", state="reverted", timeout=JOB_TIMEOUT)
    assert result["actions"] == ["reverted to snapshot s1 (RAM and disks hdd, data)"]
    with vms.store() as store:
        assert store.require_vm("vm1").status.value == "running"
    match, offset = shell(vms, "cat /state", r"(?m)^(before|after)\r?$", offset)
    assert match.strip() == "before"

    # one disk of a running VM: disk only; loading it under the guest is refused
    result = ensure_snapshot(ctx, "vm1", "disk-only", drive="data", timeout=JOB_TIMEOUT)
    assert result["actions"] == ["created snapshot disk-only of disk data"]
    assert not result["snapshot"]["vm_state"]
    with pytest.raises(StateConflict, match="cannot load snapshot 'disk-only' into one disk"):
        ensure_snapshot(ctx, "vm1", "disk-only", state="reverted", drive="data")
    assert ensure_snapshot(ctx, "vm1", "disk-only", state="absent", drive="data")["changed"]

    # retention, then delete, all live
    for name in ("r1", "r2"):
        ensure_snapshot(ctx, "vm1", name, retention=2, timeout=JOB_TIMEOUT)
    assert [e["name"] for e in list_snapshots(ctx, "vm1")] == ["r1", "r2"]
    result = ensure_snapshot(ctx, "vm1", "r1", state="absent", timeout=JOB_TIMEOUT)
    assert result["actions"] == ["deleted snapshot r1 (RAM and disks hdd, data)"]

    # the offline view (qemu-img JSON) of the same images agrees with the live one
    live_view = [(e["name"], e["vm_state"], e["drives"]) for e in list_snapshots(ctx, "vm1")]
    with vms.store() as store:
        lifecycle.ensure_stopped(vms.paths, store, "vm1", force=True)
    offline_view = [(e["name"], e["vm_state"], e["drives"]) for e in list_snapshots(ctx, "vm1")]
    assert offline_view == live_view == [("r2", True, ["hdd", "data"])]
    result = ensure_snapshot(ctx, "vm1", "r2", state="reverted")
    assert re.search(r"disks only: the VM is stopped", result["actions"][0])


def test_live_raw_disk_is_refused_by_name(vms: VMFactory, tmp_path: Path):
    vms.define("vm1", storage=[{"name": "hdd", "type": "qcow2", "size": "16M"},
                               {"name": "scratch", "type": "raw", "size": "1M"}])
    with vms.store() as store:
        prepare_storage(vms.paths, store, store.require_vm("vm1").spec_data)
        lifecycle.ensure_running(vms.paths, store, "vm1")
    ctx = EngineContext(paths=vms.paths)
    from maqet_engine.errors import UsageError

    with pytest.raises(UsageError, match="storage 'scratch' of VM 'vm1' is a raw image"):
        ensure_snapshot(ctx, "vm1", "s1")
