"""The VM as front ends show it: stored record, spec, and the observed run view."""

from __future__ import annotations

from maqet_engine.engine import runstate
from maqet_engine.engine.runstate import RunView
from maqet_engine.paths import Paths
from maqet_engine.store import VMRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def vm_view(record: VMRecord, paths: Paths, run: RunView | None = None, *,
            live: dict[str, Any] | None = None, with_argv: bool = False,
            networks: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """JSON-able description of one VM.

    :param run: the observed run view (probed here when None): ``status`` is the
        observed status, never a stale record.
    :param live: the runner's own report (:func:`lifecycle.live_status`), overlaid.
    :param with_argv: add the QEMU command line (imports the definition package: not
        for ``ls``).
    :param networks: every named network by name (``engine.networks.network_index``);
        read from the store here when not given (callers listing many VMs pass it).
    """
    from maqet_engine.engine import networks as nets

    run = run or runstate.probe(paths, record)
    spec = record.spec_data
    data_paths = paths.vm_data(record.name)
    if networks is None:
        networks = _read_networks(paths) if any(True for _ in nets.named_nics(spec)) else {}
    network_drift = nets.network_drift(record, networks) if run.active else []
    view: dict[str, Any] = {
        "name": record.name,
        "id": record.id,
        "status": run.status.value,
        "recorded_status": run.recorded.value,
        "status_reason": run.reason,
        "runner_alive": run.runner_alive,
        "qemu_alive": run.qemu_alive,
        "spec": spec,
        "spec_hash": record.spec_hash,
        "restart_required": (record.restart_required or bool(network_drift)) and run.active,
        "networks_changed": network_drift,
        "tags": spec.get("tags") or [],
        "runner_pid": run.runner_pid,
        "qemu_pid": run.qemu_pid,
        "accel": record.accel if run.active else None,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "started_at": record.started_at,
        "stopped_at": record.stopped_at,
        "last_exit": record.last_exit,
        "ports": forwarded_ports(spec),
        "networks": nets.nic_views(record, networks, paths),
        "paths": {
            "dir": str(data_paths.root),
            "runner_log": str(data_paths.runner_log),
            "qemu_log": str(data_paths.qemu_log),
            "serial_log": str(data_paths.serial_log),
        },
    }
    if with_argv:
        from maqet_engine.engine.command_line import command_line

        host = nets.resolve(paths, record, networks, launching=False)
        view["argv"] = command_line(record, paths, accel=view["accel"], launching=False,
                                    backends=host.backends)
    if live:
        view.update(live)
    return view


def forwarded_ports(spec: dict[str, Any]) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = []
    for nic in spec.get("network") or []:
        for fwd in nic.get("forward") or []:
            ports.append(dict(fwd))
    return ports


def _read_networks(paths: Paths) -> dict[str, Any]:
    """Every named network (an empty mapping when the store does not exist)."""
    from maqet_engine.engine.networks import network_index
    from maqet_engine.store import Store

    with Store.open(paths.db, create=False) as store:
        return network_index(store)
