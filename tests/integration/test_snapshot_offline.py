"""Offline snapshots (VM stopped) against real qemu-img/qemu-io: round trip with data
written in between, VM-wide over several disks, retention, check mode, refusals, and
the CLI's structured list."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_storage import cli, define

from maqet_engine import engine
from maqet_engine.engine.context import EngineContext
from maqet_engine.errors import (
    MaqetError,
    NotFoundError,
    SnapshotNotFound,
    StateConflict,
    UsageError,
)
from maqet_engine.paths import resolve_paths
from maqet_engine.storage import prepare_storage
from maqet_engine.store import Store
from maqet_engine.store import storage_records as records

pytestmark = pytest.mark.qemu


def checking(ctx: EngineContext) -> EngineContext:
    return EngineContext(paths=ctx.paths, check_mode=True)


def io(disk: Path, command: str) -> str:
    proc = subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(disk)],
                          capture_output=True, text=True, check=True)
    return proc.stdout + proc.stderr


def has_pattern(disk: Path, byte: int) -> bool:
    return "verification failed" not in io(disk, f"read -P {byte:#x} 0 4k")


@pytest.fixture
def vm(maqet_home: Path) -> dict[str, Any]:
    spec = define(maqet_home, "vm1", {"name": "hdd", "type": "qcow2", "size": "16M"},
                  {"name": "data", "type": "qcow2", "size": "16M"})
    paths = resolve_paths()
    with Store.open(paths.db) as store:
        prepare_storage(paths, store, spec)
    root = paths.vm_data("vm1").root
    return {"ctx": EngineContext(paths=paths), "hdd": root / "hdd.qcow2",
            "data": root / "data.qcow2"}


def test_drive_round_trip_restores_the_old_bytes(vm: dict[str, Any]):
    ctx, hdd = vm["ctx"], vm["hdd"]
    io(hdd, "write -P 0x41 0 4k")
    result = engine.snapshot(ctx, "vm1", "s1", drive="hdd")
    assert result.changed and result.describe() == ["created snapshot s1 of disk hdd"]
    assert not result.data["live"]
    io(hdd, "write -P 0x42 0 4k")
    assert has_pattern(hdd, 0x42)
    [entry] = engine.list_snapshots(ctx, "vm1", "hdd").data
    assert entry["name"] == "s1" and entry["drive"] == "hdd" and entry["managed"]
    assert entry["vm_state"] is False and entry["drives"] == ["hdd"]
    result = engine.snapshot(ctx, "vm1", "s1", state="reverted", drive="hdd")
    assert result.changed and result.describe() == ["reverted to snapshot s1 of disk hdd"]
    assert has_pattern(hdd, 0x41)
    assert not engine.snapshot(ctx, "vm1", "s1", drive="hdd").changed  # exists
    result = engine.snapshot(ctx, "vm1", "s1", state="absent", drive="hdd")
    assert result.describe() == ["deleted snapshot s1 of disk hdd"]
    assert engine.list_snapshots(ctx, "vm1", "hdd").data == []
    assert not engine.snapshot(ctx, "vm1", "s1", state="absent", drive="hdd").changed
    with Store.open(ctx.paths.db) as store:
        assert records.snapshots_of(store, "vm1") == []


def test_vm_wide_offline_covers_every_qcow2_disk(vm: dict[str, Any]):
    ctx = vm["ctx"]
    io(vm["hdd"], "write -P 0x11 0 4k")
    io(vm["data"], "write -P 0x22 0 4k")
    result = engine.snapshot(ctx, "vm1", "both")
    assert result.describe() == ["created snapshot both (disks hdd, data)"]
    made = result.data["snapshot"]
    assert made["complete"] and made["drives"] == ["hdd", "data"]
    io(vm["hdd"], "write -P 0x33 0 4k")
    io(vm["data"], "write -P 0x44 0 4k")
    engine.snapshot(ctx, "vm1", "both", state="reverted")
    assert has_pattern(vm["hdd"], 0x11) and has_pattern(vm["data"], 0x22)
    # a snapshot on one disk only is listed as incomplete and cannot be reverted VM-wide
    engine.snapshot(ctx, "vm1", "only-hdd", drive="hdd")
    listed = {e["name"]: e for e in engine.list_snapshots(ctx, "vm1").data}
    assert listed["both"]["complete"] and not listed["only-hdd"]["complete"]
    with pytest.raises(SnapshotNotFound, match="exists only on hdd"):
        engine.snapshot(ctx, "vm1", "only-hdd", state="reverted")
    # ... and 'present' makes it whole
    result = engine.snapshot(ctx, "vm1", "only-hdd")
    assert result.describe()[0].startswith("deleted incomplete snapshot only-hdd")
    assert result.data["snapshot"]["complete"]


def test_check_mode_changes_nothing_and_predicts_the_same_actions(vm: dict[str, Any]):
    ctx = vm["ctx"]
    checked = engine.snapshot(checking(ctx), "vm1", "s1")
    assert checked.changed and engine.list_snapshots(ctx, "vm1").data == []
    done = engine.snapshot(ctx, "vm1", "s1")
    assert done.describe() == checked.describe()
    assert not engine.snapshot(checking(ctx), "vm1", "s1").changed
    assert engine.snapshot(checking(ctx), "vm1", "s1", state="absent").changed
    assert [e["name"] for e in engine.list_snapshots(ctx, "vm1").data] == ["s1"]


def test_retention_prunes_the_oldest(vm: dict[str, Any]):
    ctx = vm["ctx"]
    for name in ("a", "b", "c"):
        engine.snapshot(ctx, "vm1", name, retention=2)
    names = [e["name"] for e in engine.list_snapshots(ctx, "vm1").data]
    assert len(names) == 2 and "c" in names
    checked = engine.snapshot(checking(ctx), "vm1", "d", retention=2)
    assert len(checked.data["pruned"]) == 1 and checked.data["pruned"][0] in names
    result = engine.snapshot(ctx, "vm1", "d", retention=2)
    assert result.data["pruned"] == checked.data["pruned"]
    assert result.describe()[-1] == f"deleted snapshot {result.data['pruned'][0]} (retention 2)"
    assert sorted(e["name"] for e in engine.list_snapshots(ctx, "vm1").data) == sorted(
        {*names, "d"} - set(result.data["pruned"]))


def test_snapshot_operations_are_events_of_their_operation(vm: dict[str, Any]):
    """Issue 14: created, deleted (and why), reverted and failed snapshot operations are
    events of the VM, each under the op id of the call that did it; check mode records
    nothing. The failure is real: qemu-io holds the image's write lock."""
    ctx = vm["ctx"]
    first, second = ctx.with_op_id("snap-1"), ctx.with_op_id("snap-2")
    engine.snapshot(first, "vm1", "a", drive="hdd")
    engine.snapshot(checking(second), "vm1", "b", drive="hdd", retention=1)
    engine.snapshot(second, "vm1", "b", drive="hdd", retention=1)
    engine.snapshot(ctx.with_op_id("snap-3"), "vm1", "b", drive="hdd", state="reverted")
    holder = subprocess.Popen(["qemu-io", "-f", "qcow2", str(vm["hdd"])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.read(9) == b"qemu-io> "  # its prompt: the image is open
        with pytest.raises(MaqetError, match="lock"):
            engine.snapshot(ctx.with_op_id("snap-4"), "vm1", "c", drive="hdd")
    finally:
        holder.kill()
        holder.wait()
    trail = [(e["kind"], e["op_id"], e["data"]["snapshot"], e["data"].get("reason"))
             for e in engine.events(ctx, "vm1").data if e["kind"].startswith("snapshot_")]
    assert trail == [("snapshot_created", "snap-1", "a", None),
                     ("snapshot_created", "snap-2", "b", None),
                     ("snapshot_deleted", "snap-2", "a", "retention"),
                     ("snapshot_reverted", "snap-3", "b", None),
                     ("snapshot_failed", "snap-4", "c", None)]
    failed = engine.events(ctx, "vm1", op_id="snap-4").data[-1]["data"]
    assert failed["operation"] == "created" and "lock" in failed["error"]
    assert failed["drive"] == "hdd" and failed["live"] is False


def test_refusals_are_precise(maqet_home: Path):
    spec = define(maqet_home, "vm1", {"name": "hdd", "type": "qcow2", "size": "1M"},
                  {"name": "scratch", "type": "raw", "size": "1M"})
    paths = resolve_paths()
    ctx = EngineContext(paths=paths)
    with pytest.raises(StateConflict, match="does not exist yet"):
        engine.snapshot(ctx, "vm1", "s1", drive="hdd")
    with Store.open(paths.db) as store:
        prepare_storage(paths, store, spec)
    with pytest.raises(UsageError, match="storage 'scratch' of VM 'vm1' is a raw image .*"
                       "cannot hold internal snapshots"):
        engine.snapshot(ctx, "vm1", "s1")
    with pytest.raises(UsageError, match="raw images cannot hold internal snapshots"):
        engine.snapshot(ctx, "vm1", "s1", drive="scratch")
    with pytest.raises(NotFoundError, match="no storage named 'nope'"):
        engine.snapshot(ctx, "vm1", "s1", drive="nope")
    with pytest.raises(SnapshotNotFound, match="does not exist"):
        engine.snapshot(ctx, "vm1", "never", state="reverted", drive="hdd")
    with pytest.raises(StateConflict, match="not running, so a live snapshot"):
        engine.snapshot(ctx, "vm1", "s1", drive="hdd", live=True)
    with pytest.raises(UsageError, match="retention"):
        engine.snapshot(ctx, "vm1", "s1", drive="hdd", retention=0)
    assert engine.snapshot(ctx, "vm1", "s1", drive="hdd").changed


def test_cli_round_trip_with_json(vm: dict[str, Any], capsys: pytest.CaptureFixture[str]):
    code, result = cli("snapshot", "vm1", "create", "hdd", "s1", capsys=capsys)
    assert code == 0 and result["changed"]
    code, listed = cli("snapshot", "vm1", "list", "hdd", capsys=capsys)
    assert code == 0 and [e["name"] for e in listed] == ["s1"]
    code, result = cli("snapshot", "vm1", "revert", "hdd", "s1", capsys=capsys)
    assert code == 0 and [a["action"] for a in result["actions"]] == ["revert_snapshot"]
    assert result["actions"][0]["snapshot"] == "s1" and result["actions"][0]["drive"] == "hdd"
    code, result = cli("snapshot", "vm1", "load", "hdd", "s1", capsys=capsys)  # old spelling
    assert code == 0 and result["changed"]
    code, result = cli("snapshot", "vm1", "load", "hdd", "nope", capsys=capsys)
    assert code == 3 and result["error"]["type"] == "SnapshotNotFound"
    code, result = cli("snapshot", "vm1", "delete", "hdd", "s1", capsys=capsys)
    assert code == 0 and result["changed"]
    code, result = cli("snapshot", "vm1", "list", "a", "b", capsys=capsys)
    assert code == 2
