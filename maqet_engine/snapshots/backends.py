"""The two ways to reach a VM's snapshots: :class:`Offline` (VM stopped: qemu-img on
the image files) and :class:`Live` (VM running: QMP through the VM's runner; VM-wide
operations are QMP snapshot jobs awaited by events inside the runner).

Both answer ``snapshots(disks)`` with the images' own structured records (the shape
of QEMU's ``SnapshotInfo``: ``name``, ``id``, ``date-sec``, ``date-nsec``,
``vm-state-size``, ``vm-clock-sec``, ``vm-clock-nsec``) per disk name.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import MaqetError, RuntimeFailure, StateConflict, UsageError
from maqet_engine.paths import Paths
from maqet_engine.snapshots.targets import Disk
from maqet_engine.storage import qcow2, qemu_img
from maqet_engine.store import Store

SnapshotInfo = dict[str, Any]


class Offline:
    live = False

    def __init__(self, vm: str, timeout: float) -> None:
        self.vm = vm
        self.timeout = timeout

    def snapshots(self, disks: list[Disk]) -> dict[str, list[SnapshotInfo]]:
        result: dict[str, list[SnapshotInfo]] = {}
        for disk in disks:
            if not os.path.exists(disk.file):
                result[disk.name] = []  # not created yet (maqet creates it at first start)
                continue
            try:  # the image's own snapshot table: no qemu-img process (see .qcow2)
                result[disk.name] = qcow2.read_snapshots(disk.file)
            except (qcow2.Unsupported, OSError):  # qemu-img knows, or says precisely why not
                result[disk.name] = qemu_img.snapshots(
                    disk.file, what=f"list snapshots of disk {disk.name} of VM {self.vm!r}")
        return result

    def _each(self, op: str, disks: list[Disk], name: str, verb: str) -> None:
        for disk in disks:
            if not os.path.exists(disk.file):
                raise StateConflict(f"disk {disk.name} of VM {self.vm!r} ({disk.file}) does "
                                    "not exist yet", hint="maqet creates it at the first start")
            qemu_img.snapshot(op, disk.file, name, timeout=self.timeout,
                              what=f"{verb} snapshot {name!r} of disk {disk.name} of VM "
                                   f"{self.vm!r}")

    def create(self, disks: list[Disk], name: str, *, vm_wide: bool) -> None:
        done: list[Disk] = []
        try:
            for disk in disks:
                self._each("create", [disk], name, "create")
                done.append(disk)
        except MaqetError:
            for disk in done:  # all disks or none
                with contextlib.suppress(MaqetError):
                    self._each("delete", [disk], name, "roll back")
            raise

    def load(self, disks: list[Disk], name: str, *, vm_wide: bool,
             vmstate: str | None) -> None:
        self._each("apply", disks, name, "load")

    def delete(self, disks: list[Disk], name: str, *, vm_wide: bool) -> None:
        self._each("delete", disks, name, "delete")


class Live:
    live = True

    def __init__(self, paths: Paths, store: Store, vm: str, timeout: float) -> None:
        self.paths = paths
        self.store = store
        self.vm = vm
        self.timeout = timeout

    def _qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        from maqet_engine.engine import lifecycle

        return lifecycle.call(self.paths, self.store, self.vm, "qmp", command=command,
                              arguments=arguments or {},
                              ipc_timeout=self.timeout + C.IPC_TIMEOUT_S)

    def _job(self, command: str, arguments: dict[str, Any]) -> dict[str, Any]:
        from maqet_engine.engine import lifecycle

        try:
            result: dict[str, Any] = lifecycle.call(
                self.paths, self.store, self.vm, "job", command=command, arguments=arguments,
                timeout=self.timeout, ipc_timeout=self.timeout + C.IPC_TIMEOUT_S)
        except UsageError as err:
            if "unknown method 'job'" not in str(err):
                raise
            raise RuntimeFailure(
                f"the runner of VM {self.vm!r} cannot run QMP jobs (it predates them)",
                hint="restart the VM with this maqet, then retry") from err
        return result

    def snapshots(self, disks: list[Disk]) -> dict[str, list[SnapshotInfo]]:
        nodes = self._qmp("query-named-block-nodes", {"flat": True})
        wanted = {d.name for d in disks}
        result: dict[str, list[SnapshotInfo]] = {d.name: [] for d in disks}
        for node in nodes:
            if node.get("node-name") in wanted:
                result[node["node-name"]] = list(node.get("image", {}).get("snapshots") or [])
        return result

    def create(self, disks: list[Disk], name: str, *, vm_wide: bool) -> None:
        if vm_wide:
            self._job("snapshot-save", {"tag": name, "vmstate": disks[0].name,
                                        "devices": [d.name for d in disks]})
            return
        for disk in disks:  # one disk of a running VM: disk only, no RAM
            self._qmp("blockdev-snapshot-internal-sync", {"device": disk.name, "name": name})

    def load(self, disks: list[Disk], name: str, *, vm_wide: bool,
             vmstate: str | None) -> None:
        if not vm_wide:
            raise StateConflict(
                f"cannot load snapshot {name!r} into one disk of the running VM {self.vm!r}: "
                "the guest would see its disk change under it",
                hint="stop the VM first, or load a VM-wide snapshot (without DRIVE)")
        if vmstate is None:
            raise UsageError(
                f"snapshot {name!r} of VM {self.vm!r} holds no RAM state (it was taken while "
                "the VM was stopped), so it cannot be loaded into the running VM",
                hint="stop the VM, load it, and start the VM again")
        self._job("snapshot-load", {"tag": name, "vmstate": vmstate,
                                    "devices": [d.name for d in disks]})

    def delete(self, disks: list[Disk], name: str, *, vm_wide: bool) -> None:
        if vm_wide:
            self._job("snapshot-delete", {"tag": name, "devices": [d.name for d in disks]})
            return
        for disk in disks:
            self._qmp("blockdev-snapshot-delete-internal-sync",
                      {"device": disk.name, "name": name})
