"""The VM as front ends show it: stored record, spec, and the observed run view."""

from __future__ import annotations

from maqet_engine import constants as C
from maqet_engine.engine import runstate
from maqet_engine.engine.runstate import RunView
from maqet_engine.paths import Paths
from maqet_engine.store import VMRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
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
    ports = forwarded_ports(spec, record.bound_ports if run.active else [])
    host_keys, alias = known_host_keys(data_paths.known_hosts, record.name)
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
        "ports": ports,
        "known_hosts": str(data_paths.known_hosts) if host_keys else None,
        "ssh": ssh_view(spec, ports, host_keys, alias=alias),
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


def forwarded_ports(spec: dict[str, Any], bound: Sequence[dict[str, Any]] = (),
                    ) -> list[dict[str, Any]]:
    """The spec's user-net forwards, each with ``auto`` (its host port is ``auto`` in the
    spec) and, for those, the port QEMU bound in this run (``bound``: what the runner
    recorded), or None while the VM does not run."""
    left = list(bound)

    def take(netdev: str, fwd: dict[str, Any], *, host: Any = None) -> dict[str, Any] | None:
        for found in left:
            if (found.get("netdev"), found.get("protocol"), found.get("host_address"),
                    found.get("guest")) == (netdev, fwd["protocol"], fwd["host_address"],
                                            fwd["guest"]) and host in (None, found.get("host")):
                left.remove(found)
                return found
        return None

    nics = [(f"{C.NETDEV_ID_PREFIX}{index}", nic.get("forward") or [])
            for index, nic in enumerate(spec.get("network") or [])]
    for netdev, forwards in nics:  # numbered ports first: what is left is the auto ones'
        for fwd in forwards:
            if fwd["host"] != C.FORWARD_AUTO:
                take(netdev, fwd, host=fwd["host"])
    ports: list[dict[str, Any]] = []
    for netdev, forwards in nics:
        for fwd in forwards:
            entry = dict(fwd, auto=fwd["host"] == C.FORWARD_AUTO)
            if entry["auto"]:
                found = take(netdev, fwd)
                entry["host"] = found["host"] if found else None
            ports.append(entry)
    return ports


def _read_networks(paths: Paths) -> dict[str, Any]:
    """Every named network (an empty mapping when the store does not exist)."""
    from maqet_engine.engine.networks import network_index
    from maqet_engine.store import Store

    with Store.open(paths.db, create=False) as store:
        return network_index(store)


def known_host_keys(path: Any, vm_name: str) -> tuple[list[str], str | None]:
    """The keys in a VM's known_hosts (``[]`` without one): what its runner read from
    the guest's console; and the VM's host key alias when the file names the guest by
    it (a runner of an older maqet did not), else None."""
    try:
        if not path.exists():
            return [], None
        from maqet_engine.cloudinit.known_hosts import (
            distinct_keys,
            host_key_alias,
            known_hosts_entries,
        )

        entries = known_hosts_entries(path)
        alias = host_key_alias(vm_name)
        named = any(alias in patterns for patterns, _key in entries)
        return distinct_keys(entries), (alias if named else None)
    except (OSError, ValueError):
        return [], None


def ssh_view(spec: dict[str, Any], ports: list[dict[str, Any]],
             host_keys: list[str], *, alias: str | None = None) -> dict[str, Any]:
    """How to reach the guest over SSH: the ``ssh`` section (user: else the first
    ``cloud_init`` user), and the first TCP forward to its port with the host port bound
    now (``host`` is where to connect: ``127.0.0.1`` for a forward on every interface;
    ``port`` None when there is none, or it is ``auto`` and the VM does not run).
    ``host_key_alias``: the name known_hosts holds ``host_keys`` under whatever address
    reaches the guest (``ssh -o HostKeyAlias=...``), None while it holds none."""
    section = spec.get("ssh") or {}
    users = (spec.get("cloud_init") or {}).get("users") or []
    guest_port = section.get("port") or C.SSH_DEFAULT_PORT
    forward = next((p for p in ports if p["protocol"] == "tcp" and p["guest"] == guest_port),
                   None)
    address = forward["host_address"] if forward else None
    return {
        "user": section.get("user") or (users[0]["name"] if users else None),
        "private_key": section.get("private_key"),
        "guest_port": guest_port,
        "host_address": address,
        "host": "127.0.0.1" if address == "0.0.0.0" else address,
        "port": forward["host"] if forward else None,
        "host_keys": host_keys,
        "host_key_alias": alias,
    }
