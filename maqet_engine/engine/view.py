"""The VM as front ends show it: stored record, spec and (when asked) live state."""

from __future__ import annotations

from maqet_engine.paths import Paths
from maqet_engine.store import VMRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def qemu_argv(record: VMRecord, paths: Paths) -> list[str]:
    """The QEMU command line the runner builds for this VM's stored definition."""
    from maqet_engine.definition import Spec, build_argv, resolve_accel

    spec = Spec.from_json(record.spec_json)
    accel = record.accel if record.status.is_active and record.accel else None
    return build_argv(spec, runtime=paths.vm_runtime(record.id), data=paths.vm_data(record.name),
                      accel=accel or resolve_accel(spec.data["accel"]))


def vm_view(record: VMRecord, paths: Paths, live: dict[str, Any] | None = None, *,
            with_argv: bool = False) -> dict[str, Any]:
    """JSON-able description of one VM; ``live`` overlays the runner's view.
    ``with_argv`` adds the QEMU command line (imports the spec package: not for ls)."""
    spec = record.spec_data
    data_paths = paths.vm_data(record.name)
    view: dict[str, Any] = {
        "name": record.name,
        "id": record.id,
        "status": record.status.value,
        "spec": spec,
        "spec_hash": record.spec_hash,
        "restart_required": record.restart_required,
        "tags": spec.get("tags") or [],
        "runner_pid": record.runner_pid,
        "qemu_pid": record.qemu_pid,
        "accel": record.accel,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "started_at": record.started_at,
        "stopped_at": record.stopped_at,
        "last_exit": record.last_exit,
        "ports": _forwarded_ports(spec),
        "paths": {
            "dir": str(data_paths.root),
            "runner_log": str(data_paths.runner_log),
            "qemu_log": str(data_paths.qemu_log),
            "serial_log": str(data_paths.serial_log),
        },
    }
    if with_argv:
        view["argv"] = qemu_argv(record, paths)
    if live:
        view.update(live)
    return view


def _forwarded_ports(spec: dict[str, Any]) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = []
    for nic in spec.get("network") or []:
        for fwd in nic.get("forward") or []:
            ports.append(dict(fwd))
    return ports
