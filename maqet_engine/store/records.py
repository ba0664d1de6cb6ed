"""Rows of the state store as typed, immutable records."""

from __future__ import annotations

import json
import sqlite3
from enum import StrEnum

from maqet_engine.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class VMStatus(StrEnum):
    """Run state as recorded by the runner (or by the engine when no runner exists)."""

    DEFINED = "defined"  # never started
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"

    @property
    def is_active(self) -> bool:
        """A QEMU process is supposed to exist."""
        return self in (VMStatus.STARTING, VMStatus.RUNNING, VMStatus.PAUSED, VMStatus.STOPPING)


class VMRecord(Frozen):
    __slots__ = (
        "id", "name", "spec_json", "spec_hash", "status", "runner_pid", "qemu_pid", "accel",
        "created_at", "updated_at", "started_at", "stopped_at", "last_exit", "started_hash",
        "qemu_start", "runner_start", "started_networks", "ports_json",
    )
    id: int
    name: str
    spec_json: str
    spec_hash: str
    status: VMStatus
    runner_pid: int | None
    qemu_pid: int | None
    accel: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    stopped_at: float | None
    last_exit: str | None
    started_hash: str | None
    qemu_start: int | None  # start time of qemu_pid (ipc.procs): identity, not a guess
    runner_start: int | None
    started_networks: str | None  # JSON {network: spec_hash} the running QEMU started with
    ports_json: str | None  # forwards as QEMU bound them while it runs (runner.reach)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> VMRecord:
        return cls(
            id=row["id"],
            name=row["name"],
            spec_json=row["spec_json"],
            spec_hash=row["spec_hash"],
            status=VMStatus(row["status"]),
            runner_pid=row["runner_pid"],
            qemu_pid=row["qemu_pid"],
            accel=row["accel"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            started_at=row["started_at"],
            stopped_at=row["stopped_at"],
            last_exit=row["last_exit"],
            started_hash=row["started_hash"],
            qemu_start=row["qemu_start"],
            runner_start=row["runner_start"],
            started_networks=row["started_networks"],
            ports_json=row["ports_json"],
        )

    @property
    def restart_required(self) -> bool:
        """QEMU runs with another definition than the stored one."""
        return (
            self.status.is_active
            and self.started_hash is not None
            and self.started_hash != self.spec_hash
        )

    @property
    def bound_ports(self) -> list[dict[str, Any]]:
        """What QEMU bound for the user-net forwards of this run (``[]`` when it does
        not run): ``{"netdev", "protocol", "host_address", "host", "guest"}`` each."""
        if not self.ports_json:
            return []
        ports: list[dict[str, Any]] = json.loads(self.ports_json)
        return ports

    @property
    def spec_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.spec_json)
        return data


class EventRecord(Frozen):
    __slots__ = ("id", "vm_name", "at", "kind", "data", "op_id")
    id: int
    vm_name: str
    at: float
    kind: str
    data: dict[str, Any]
    op_id: str | None  # the operation that caused it (None: the guest, QEMU, nobody)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> EventRecord:
        return cls(
            id=row["id"],
            vm_name=row["vm_name"],
            at=row["at"],
            kind=row["kind"],
            data=json.loads(row["data"]) if row["data"] else {},
            op_id=row["op_id"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "vm": self.vm_name, "at": self.at, "kind": self.kind,
                "data": self.data, "op_id": self.op_id}
