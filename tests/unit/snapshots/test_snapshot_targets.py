"""Which disks a snapshot covers and the precise refusals (pure code)."""

from __future__ import annotations

import pytest

from maqet_engine.errors import NotFoundError, UsageError
from maqet_engine.snapshots import targets
from maqet_engine.snapshots.api import _view


def _spec(*entries: dict) -> dict:
    return {"storage": [{"readonly": False, **e} for e in entries]}


HDD = {"name": "hdd", "type": "qcow2", "file": "/d/hdd.qcow2"}
DATA = {"name": "data", "type": "qcow2", "file": "/d/data.qcow2"}
RAW = {"name": "scratch", "type": "raw", "file": "/d/scratch.raw"}
ISO = {"name": "cd", "type": "cdrom", "file": "/d/x.iso"}


def test_vm_wide_covers_writable_qcow2_disks_in_order():
    spec = _spec(HDD, ISO, {**DATA, "readonly": True}, {**RAW, "readonly": True}, DATA)
    spec["storage"][2]["name"] = "ro"
    assert [d.name for d in targets.vm_wide(spec, "vm1")] == ["hdd", "data"]


def test_vm_wide_refuses_a_writable_raw_disk_naming_it():
    with pytest.raises(UsageError, match=r"storage 'scratch' of VM 'vm1' is a raw image "
                       r"\(/d/scratch.raw\); raw images cannot hold internal snapshots"):
        targets.vm_wide(_spec(HDD, RAW), "vm1")


def test_vm_wide_needs_a_qcow2_disk():
    with pytest.raises(UsageError, match="no writable qcow2 disk"):
        targets.vm_wide(_spec(ISO), "vm1")


def test_one_drive_errors():
    spec = _spec(HDD, RAW, ISO)
    assert targets.one_drive(spec, "vm1", "hdd").file == "/d/hdd.qcow2"
    with pytest.raises(UsageError, match="raw images cannot hold internal snapshots"):
        targets.one_drive(spec, "vm1", "scratch")
    with pytest.raises(UsageError, match="is a cdrom, not a disk image"):
        targets.one_drive(spec, "vm1", "cd")
    with pytest.raises(NotFoundError, match="no storage named 'nope'") as err:
        targets.one_drive(spec, "vm1", "nope")
    assert "hdd, scratch" in str(err.value)


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 64, "12", "a/b"])
def test_bad_snapshot_names(name):
    with pytest.raises(UsageError):
        targets.validate_name(name)


def test_view_groups_by_name_across_disks():
    disks = targets.vm_wide(_spec(HDD, DATA), "vm1")
    per_disk = {
        "hdd": [{"name": "s1", "date-sec": 5, "date-nsec": 0, "vm-state-size": 100,
                 "vm-clock-sec": 3, "vm-clock-nsec": 500_000_000},
                {"name": "old", "date-sec": 1, "date-nsec": 0, "vm-state-size": 0}],
        "data": [{"name": "s1", "date-sec": 5, "date-nsec": 0, "vm-state-size": 0}],
    }
    view = _view(per_disk, disks, "", {})
    assert [v["name"] for v in view] == ["old", "s1"]
    old, s1 = view
    assert s1["complete"] and s1["vm_state"] and s1["vm_state_drive"] == "hdd"
    assert s1["drives"] == ["hdd", "data"] and s1["vm_clock"] == 3.5
    assert not old["complete"] and not old["vm_state"] and old["drive"] is None
