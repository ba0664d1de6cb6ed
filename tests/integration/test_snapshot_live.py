"""Live snapshots of the running tiny guest through its runner: state written in the
guest's RAM (its root is a ramfs) is back after loading the snapshot; delete,
retention, one-disk live snapshots; and the offline view of the same images agrees."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from guest import wait_console, wait_marker

from maqet_engine import engine
from maqet_engine.engine import apply
from maqet_engine.engine.context import EngineContext
from maqet_engine.errors import StateConflict
from maqet_engine.storage import prepare_storage

pytestmark = pytest.mark.qemu
# Bounded wait (seconds) and what it usually takes here under TCG.
JOB_TIMEOUT = 60.0  # a live snapshot of this 256 MiB guest: ~1.2 s create, ~0.2 s load
VMFactory = Any  # the 'vms' fixture of tests/integration/conftest.py


def shell(vms: VMFactory, command: str, done: str, since: int) -> tuple[str, int]:
    """Run ``command`` in the guest shell; wait for the regex ``done`` after ``since``."""
    engine.write_console(vms.ctx(), "vm1", command + "\n")
    return wait_console(vms.paths, "vm1", done, since=since)


@pytest.fixture
def running(vms: VMFactory) -> EngineContext:
    vms.define("vm1", storage=[{"name": "hdd", "type": "qcow2", "size": "16M"},
                               {"name": "data", "type": "qcow2", "size": "16M"}])
    ctx = EngineContext(paths=vms.paths)
    result = apply(ctx, name="vm1", state="running")  # creates both disks, then starts
    assert result.describe() == ["created disk hdd (16M)", "created disk data (16M)", "started"]
    wait_marker(vms.paths, "vm1")
    return ctx


def test_live_snapshot_brings_back_the_guest_state(vms: VMFactory, running: EngineContext):
    ctx = running
    _, offset = shell(vms, "echo before > /state; echo W-$((1+1))", r"W-2", 0)
    result = engine.snapshot(ctx, "vm1", "s1", timeout=JOB_TIMEOUT)
    assert result.data["live"] and result.describe() == ["created snapshot s1 (RAM and disks hdd, "
                                                    "data)"]
    snap = result.data["snapshot"]
    assert snap["vm_state"] and snap["vm_state_drive"] == "hdd" and snap["complete"]
    assert snap["size"] > 0
    _, offset = shell(vms, "echo after > /state; echo W-$((2+2))", r"W-4", offset)

    result = engine.snapshot(ctx, "vm1", "s1", state="reverted", timeout=JOB_TIMEOUT)
    assert result.describe() == ["reverted to snapshot s1 (RAM and disks hdd, data)"]
    with vms.store() as store:
        assert store.require_vm("vm1").status.value == "running"
    match, offset = shell(vms, "cat /state", r"(?m)^(before|after)\r?$", offset)
    assert match.strip() == "before"

    # one disk of a running VM: disk only; loading it under the guest is refused
    result = engine.snapshot(ctx, "vm1", "disk-only", drive="data", timeout=JOB_TIMEOUT)
    assert result.describe() == ["created snapshot disk-only of disk data"]
    assert not result.data["snapshot"]["vm_state"]
    with pytest.raises(StateConflict, match="cannot load snapshot 'disk-only' into one disk"):
        engine.snapshot(ctx, "vm1", "disk-only", state="reverted", drive="data")
    assert engine.snapshot(ctx, "vm1", "disk-only", state="absent", drive="data").changed

    # retention, then delete, all live
    for name in ("r1", "r2"):
        engine.snapshot(ctx, "vm1", name, retention=2, timeout=JOB_TIMEOUT)
    assert [e["name"] for e in engine.list_snapshots(ctx, "vm1").data] == ["r1", "r2"]
    result = engine.snapshot(ctx, "vm1", "r1", state="absent", timeout=JOB_TIMEOUT)
    assert result.describe() == ["deleted snapshot r1 (RAM and disks hdd, data)"]

    # the offline view (qemu-img JSON) of the same images agrees with the live one
    def view() -> list[tuple[Any, ...]]:
        listed = engine.list_snapshots(ctx, "vm1").data
        return [(e["name"], e["vm_state"], e["drives"]) for e in listed]

    live_view = view()
    engine.stop(ctx, "vm1", force=True)
    offline_view = view()
    assert offline_view == live_view == [("r2", True, ["hdd", "data"])]
    result = engine.snapshot(ctx, "vm1", "r2", state="reverted")
    assert re.search(r"disks only: the VM is stopped", result.describe()[0])


def test_live_raw_disk_is_refused_by_name(vms: VMFactory, tmp_path: Path):
    vms.define("vm1", storage=[{"name": "hdd", "type": "qcow2", "size": "16M"},
                               {"name": "scratch", "type": "raw", "size": "1M"}])
    with vms.store() as store:
        prepare_storage(vms.paths, store, store.require_vm("vm1").spec_data)
    ctx = EngineContext(paths=vms.paths)
    engine.start(ctx, "vm1")
    from maqet_engine.errors import UsageError

    with pytest.raises(UsageError, match="storage 'scratch' of VM 'vm1' is a raw image"):
        engine.snapshot(ctx, "vm1", "s1")
