"""Which disks a snapshot covers, and the precise refusals.

A VM-wide snapshot covers every writable qcow2 disk; its RAM and device state (live)
go into the first of them. Read-only disks and CD-ROMs cannot change, so they need no
snapshot. A writable raw disk cannot hold an internal snapshot, so a VM-wide snapshot
of a VM that has one would restore the other disks (and RAM) but not it: refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import NotFoundError, UsageError


@dataclass(frozen=True)
class Disk:
    name: str  # storage name = QEMU node-name
    type: str
    file: str
    readonly: bool


def _disks(spec: Mapping[str, Any]) -> list[Disk]:
    return [Disk(e["name"], e["type"], e["file"], bool(e.get("readonly")))
            for e in spec.get("storage") or [] if e.get("type") in C.DISK_IMAGE_TYPES]


def _raw_refusal(disk: Disk, vm: str) -> str:
    return (f"storage {disk.name!r} of VM {vm!r} is a raw image ({disk.file}); raw images "
            "cannot hold internal snapshots")


def vm_wide(spec: Mapping[str, Any], vm: str) -> list[Disk]:
    """The disks of a VM-wide snapshot (first = the one holding RAM state)."""
    disks = [d for d in _disks(spec) if not d.readonly]
    raw = [d for d in disks if d.type not in C.SNAPSHOTTABLE_FORMATS]
    if raw:
        raise UsageError(
            _raw_refusal(raw[0], vm) + ", so a VM-wide snapshot could not restore it",
            hint="convert it (qemu-img convert -O qcow2), make it readonly, or snapshot "
                 "the qcow2 disks one by one with DRIVE")
    if not disks:
        raise UsageError(f"VM {vm!r} has no writable qcow2 disk to hold a snapshot",
                         hint="add a qcow2 storage entry (its RAM state is stored there)")
    return disks


def one_drive(spec: Mapping[str, Any], vm: str, drive: str) -> Disk:
    """The disk named ``drive`` of the VM, if it can hold snapshots."""
    entries = {e["name"]: e for e in spec.get("storage") or []}
    entry = entries.get(drive)
    if entry is None:
        names = ", ".join(d.name for d in _disks(spec)) or "none"
        raise NotFoundError(f"VM {vm!r} has no storage named {drive!r}",
                            hint=f"its disks: {names}")
    if entry["type"] not in C.DISK_IMAGE_TYPES:
        raise UsageError(f"storage {drive!r} of VM {vm!r} is a {entry['type']}, not a disk "
                         "image; only qcow2 disks hold snapshots")
    disk = Disk(entry["name"], entry["type"], entry["file"], bool(entry.get("readonly")))
    if disk.type not in C.SNAPSHOTTABLE_FORMATS:
        raise UsageError(_raw_refusal(disk, vm), hint="convert it with 'qemu-img convert -O "
                         "qcow2' and set type: qcow2")
    return disk


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not C.SNAPSHOT_NAME_RE.fullmatch(name):
        raise UsageError(f"{name!r} is not a valid snapshot name",
                         hint=f"use {C.SNAPSHOT_NAME_HELP}")
    if name.isdigit():
        raise UsageError(f"{name!r} is not a valid snapshot name: QEMU would take an "
                         "all-digit name for a snapshot id", hint="add a letter")
    return name


def listable(spec: Mapping[str, Any]) -> list[Disk]:
    """The disks whose snapshots a VM-wide listing shows (writable qcow2)."""
    return [d for d in _disks(spec) if not d.readonly and d.type in C.SNAPSHOTTABLE_FORMATS]
