"""Named networks: the facade calls that define, change, remove and read them, and what
VMs need of them (checks when a VM is defined, the host side when it starts, drift).

A network is stored like a VM (normalized definition + hash, ``store/network_records``);
VMs attach by name (a NIC of ``type: network``). The rules that span VMs live here:

- a VM's NICs may only name networks that exist (not checked in check mode: an earlier
  task of the same run may create it), a link's NIC says which ``end`` it is, and
  neither a MAC address nor a link end is taken twice on one network, across the store;
- a network that VM definitions name cannot be removed (:class:`NetworkInUse`);
- a changed network marks the VMs running on it ``restart_required`` (they started with
  its old definition: ``started_networks``), and ``recreate`` restarts them;
- a start resolves each NIC's host side (:func:`prepare`): the address of a segment's
  interface, the two ends of a link, a tap device on a bridge (opened here, passed on).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.engine import runstate
from maqet_engine.engine.context import EngineContext, operation
from maqet_engine.engine.result import Result
from maqet_engine.errors import (
    NetworkInUse,
    NetworkNotFound,
    StateConflict,
    UsageError,
)
from maqet_engine.paths import Paths
from maqet_engine.store import Store, VMRecord
from maqet_engine.store import network_records as records

NETWORK_STATES = ("present", "absent")

Networks = Mapping[str, records.NetworkRecord]


# --- facade: define, change, remove -------------------------------------------------------
def load_network(ctx: EngineContext, *, definition: Mapping[str, Any] | None = None,
                 files: Sequence[Path] = (), name: str | None = None) -> Any:
    """Check and normalize a network definition into a spec: derived group, port and
    link ends filled in. ``files`` (YAML, deep-merged in order, as for VMs) come first,
    then ``definition``, then ``name``. Reads nothing of the host: a network definition
    names no host paths, and means the same on every host."""
    from maqet_engine.definition.merge import deep_merge
    from maqet_engine.definition.netspec import parse_network

    raw: dict[str, Any] = {}
    if files:
        from maqet_engine.definition import load_definition as load_files
        from maqet_engine.trust import check_definition_file

        raw, _ = load_files(files)
        for file in files:  # another user's file, or one in their directory: not trusted
            check_definition_file(Path(file))
    del ctx
    if definition is not None:
        raw = deep_merge(raw, dict(definition))
    if name:
        raw["name"] = name
    return parse_network(raw)


@operation
def apply_network(ctx: EngineContext, spec: Any = None, *, name: str | None = None,
                  state: str = "present") -> Result:
    """Converge one network to ``present`` (``spec`` needed) or ``absent``.

    ``present``: create it, or change its definition (actions ``define_network``,
    ``redefine_network``); VMs running on a changed network are listed in ``data.vms``
    with ``restart_required``. ``absent``: remove it (``remove_network``); refused with
    :class:`NetworkInUse` while VM definitions name it. ``before``/``after``:
    ``{"spec": ...}``.
    """
    if state not in NETWORK_STATES:
        raise UsageError(f"unknown network state {state!r}",
                         hint=f"use one of: {', '.join(NETWORK_STATES)}")
    net_name = spec.name if spec is not None else name
    if not net_name:
        raise UsageError("a network needs a definition or a name")
    if state == "present" and spec is None:
        raise UsageError(f"network {net_name!r}: state present needs its definition")
    result = Result(name=net_name, state=state)
    if state == "absent":
        with ctx.open_store(create=False) as store:
            return _absent(ctx, store, net_name, result)
    with ctx.open_store(create=not ctx.check_mode) as store:
        return _present(ctx, store, spec, result)


@operation
def define_network(ctx: EngineContext, spec: Any) -> Result:
    """Create a network; an identical one is unchanged, another definition under that
    name is :class:`AlreadyExists` (change it with :func:`apply_network`)."""
    from maqet_engine.errors import AlreadyExists

    with ctx.open_store(create=False) as store:
        existing = records.get_network(store, spec.name)
    if existing is not None and existing.spec_hash != spec.hash:
        raise AlreadyExists(f"a network named {spec.name!r} already exists with another "
                            "definition", hint="apply the definition to change it, or "
                            "pick another name")
    return apply_network(ctx, spec, state="present")


@operation
def remove_network(ctx: EngineContext, name: str, *, missing_ok: bool = False) -> Result:
    """``apply_network(state="absent")``; a network that does not exist is an error
    (:class:`NetworkNotFound`) unless ``missing_ok``."""
    if not missing_ok:
        with ctx.open_store(create=False) as store:
            records.require_network(store, name)
    return apply_network(ctx, name=name, state="absent")


def _present(ctx: EngineContext, store: Store, spec: Any, result: Result) -> Result:
    from maqet_engine.definition.netspec import endpoints

    existing = records.get_network(store, spec.name)
    result.before = {"spec": existing.spec_data} if existing is not None else None
    result.after = {"spec": spec.data}
    if existing is not None and existing.spec_hash == spec.hash:
        result.data = network_view(ctx.paths, store, existing)
        return result
    users = attachments(store).get(spec.name, [])
    for vm, index, nic in users:  # the VMs on it must still fit (a link's ends)
        _check_fit(nic, spec.data, vm, index)
    _check_ends_free(spec.data, users)
    result.record("define_network" if existing is None else "redefine_network")
    if ctx.check_mode:
        _check_endpoints_free(store, spec.name, endpoints(spec.data))
        if existing is not None:
            result.data = network_view(ctx.paths, store, existing, pending=spec)
        else:
            result.data = {"name": spec.name, "type": spec.type, "spec": spec.data,
                           "summary": _summary(spec.data), "vms": []}
    else:
        if existing is None:
            record = records.insert_network(store, spec.name, spec.to_json(), spec.hash,
                                            endpoints(spec.data))
        else:
            record = records.update_network(store, spec.name, spec.to_json(), spec.hash,
                                            endpoints(spec.data))
        result.data = network_view(ctx.paths, store, record)
    running = [vm for vm in result.data["vms"] if vm["active"]]
    result.restart_required = existing is not None and bool(running)
    return result


def _absent(ctx: EngineContext, store: Store, name: str, result: Result) -> Result:
    existing = records.get_network(store, name)
    if existing is None:
        return result
    result.before = {"spec": existing.spec_data}

    def refuse_if_used(vms: list[VMRecord]) -> None:
        users = sorted({vm.name for vm in vms
                        for _, nic in named_nics(vm.spec_data) if nic["network"] == name})
        if users:
            raise NetworkInUse(name, users)

    refuse_if_used(store.list_vms())
    result.record("remove_network")
    if not ctx.check_mode:  # checked again in the deleting transaction: no race
        records.delete_network(store, name, guard=refuse_if_used)
    return result


def _check_endpoints_free(store: Store, name: str, wanted: list[str]) -> None:
    """What ``insert_network`` would refuse, without writing (check mode)."""
    for endpoint in wanted:
        rows = store.query("SELECT network FROM network_endpoints WHERE endpoint = ?"
                           " AND network != ?", (endpoint, name))
        if rows:
            raise StateConflict(
                f"network {name!r} would use {endpoint.removeprefix('udp:')}, which network "
                f"{rows[0]['network']!r} uses already",
                hint="set another group/port (a link: another end) for one of them")


# --- facade: read ----------------------------------------------------------------------------
@operation
def list_networks(ctx: EngineContext) -> Result:
    """Every network (``data``: a list of network views, by name), with the VMs on it."""
    with ctx.open_store(create=False, verify=False) as store:
        views = [network_view(ctx.paths, store, r) for r in records.list_networks(store)]
    return Result(name=None, state="list", data=views)


@operation
def show_network(ctx: EngineContext, name: str) -> Result:
    """One network's view (``data``); :class:`NetworkNotFound` when there is none."""
    with ctx.open_store(create=False, verify=False) as store:
        view = network_view(ctx.paths, store, records.require_network(store, name))
    return Result(name=name, state="show", data=view)


def network_view(paths: Paths, store: Store, record: records.NetworkRecord, *,
                 pending: Any = None) -> dict[str, Any]:
    """JSON-able description of one network and the VMs attached to it (observed run
    status, MAC, link end, whether it runs with an older definition of the network).
    ``pending``: the spec a check-mode change would store."""
    spec = pending.data if pending is not None else record.spec_data
    spec_hash = pending.hash if pending is not None else record.spec_hash
    vms = []
    for vm, index, nic in attachments(store).get(record.name, []):
        vm_record = store.get_vm(vm)
        if vm_record is None:  # pragma: no cover - attachments come from the same store
            continue
        run = runstate.probe(paths, vm_record)
        started = _started_networks(vm_record).get(record.name)
        vms.append({"vm": vm, "nic": index, "mac": nic.get("mac"), "end": nic.get("end"),
                    "status": run.status.value, "active": run.active,
                    "restart_required": bool(run.active and started is not None
                                             and started != spec_hash)})
    return {"name": record.name, "type": spec["type"], "spec": spec, "spec_hash": spec_hash,
            "summary": _summary(spec), "endpoints": _endpoint_list(spec),
            "created_at": record.created_at, "updated_at": record.updated_at, "vms": vms}


def _summary(data: Mapping[str, Any]) -> str:
    from maqet_engine.definition.netspec import describe

    return describe(data)


def _endpoint_list(data: Mapping[str, Any]) -> list[str]:
    from maqet_engine.definition.netspec import endpoints

    return [e.removeprefix("udp:") for e in endpoints(data)]


# --- VMs on networks ---------------------------------------------------------------------------
def named_nics(spec: Mapping[str, Any]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """``(position, NIC)`` of a VM spec's NICs on named networks."""
    for index, nic in enumerate(spec.get("network") or []):
        if nic.get("type") == "network":
            yield index, nic


def attachments(store: Store) -> dict[str, list[tuple[str, int, Mapping[str, Any]]]]:
    """Network name -> ``(vm, NIC position, NIC)`` of every stored VM definition."""
    found: dict[str, list[tuple[str, int, Mapping[str, Any]]]] = {}
    for vm in store.list_vms():
        for index, nic in named_nics(vm.spec_data):
            found.setdefault(str(nic["network"]), []).append((vm.name, index, nic))
    return found


def network_index(store: Store) -> dict[str, records.NetworkRecord]:
    """Every network by name (what views and command lines look networks up in)."""
    return {r.name: r for r in records.list_networks(store)}


def check_vm(store: Store, spec: Mapping[str, Any], *, check_mode: bool) -> None:
    """Before a VM definition is stored: every named network it uses exists (skipped in
    check mode, where an earlier task may be about to create it), each NIC fits its
    network, and no other VM on the same network has its MAC or its link end.

    :raise NetworkNotFound: a NIC names a network that does not exist.
    :raise ConfigError: a link NIC without ``end``, or an ``end`` on another network.
    :raise StateConflict: a MAC address or a link end is taken on that network.
    """
    mine = list(named_nics(spec))
    if not mine:
        return
    name = str(spec["name"])
    networks = network_index(store)
    others = {net: [(vm, i, nic) for vm, i, nic in users if vm != name]
              for net, users in attachments(store).items()}
    for index, nic in mine:
        network = networks.get(str(nic["network"]))
        if network is None:
            if check_mode:
                continue
            raise NetworkNotFound(str(nic["network"]), used_by=f"network[{index}] of VM "
                                  f"{name!r}")
        _check_fit(nic, network.spec_data, name, index)
        for vm, other_index, other in others.get(network.name, []):
            if other.get("mac") == nic["mac"]:
                raise StateConflict(
                    f"network[{index}] of VM {name!r}: MAC address {nic['mac']} is already "
                    f"used on network {network.name!r} by VM {vm!r} (network[{other_index}])",
                    hint="set another 'mac' on one of the NICs")
            if nic.get("end") is not None and other.get("end") == nic["end"]:
                raise StateConflict(
                    f"network[{index}] of VM {name!r}: end {nic['end']} of link "
                    f"{network.name!r} is taken by VM {vm!r} (network[{other_index}])",
                    hint="a link joins two VMs: use the other end, or another link")


def _check_fit(nic: Mapping[str, Any], network: Mapping[str, Any], vm: str, index: int) -> None:
    from maqet_engine.definition.netspec import check_nic
    from maqet_engine.errors import ConfigError

    try:
        check_nic(nic, network, f"network[{index}]")
    except ConfigError as err:
        raise StateConflict(f"VM {vm!r}: {err.message}", hint=err.hint) from None


def _check_ends_free(network: Mapping[str, Any], users: list[tuple[str, int, Any]]) -> None:
    """A network changed into a link: no two VMs on one end."""
    seen: dict[str, str] = {}
    for vm, _index, nic in users:
        end = nic.get("end")
        if end is None:
            continue
        if end in seen:
            raise StateConflict(f"VMs {seen[end]!r} and {vm!r} both use end {end} of link "
                                f"{network['name']!r}", hint="give each end one VM")
        seen[end] = vm


def _started_networks(record: VMRecord) -> dict[str, str]:
    try:
        data = json.loads(record.started_networks or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def network_drift(record: VMRecord, networks: Networks) -> list[str]:
    """Networks whose definition changed (or vanished) since ``record``'s QEMU started
    on them: the VM must restart to use them as they are now. Empty for a VM that is
    not running, or that an older maqet started (nothing recorded)."""
    drift = []
    for name, started_hash in _started_networks(record).items():
        network = networks.get(name)
        if network is None or network.spec_hash != started_hash:
            drift.append(name)
    return sorted(drift)


def nic_views(record: VMRecord, networks: Networks, paths: Paths) -> list[dict[str, Any]]:
    """Every NIC of a VM for people and inventories: position, type, network (named
    networks), its type, MAC (None when QEMU picks it), link end, tap device."""
    views = []
    for index, nic in enumerate(record.spec_data.get("network") or []):
        view: dict[str, Any] = {"nic": index, "netdev": f"{C.NETDEV_ID_PREFIX}{index}",
                                "type": nic.get("type"), "model": nic.get("model"),
                                "mac": nic.get("mac"), "network": None,
                                "network_type": None, "end": nic.get("end"), "tap": None}
        if nic.get("type") == "network":
            network = networks.get(str(nic["network"]))
            view["network"] = nic["network"]
            if network is not None:
                view["network_type"] = network.spec_data["type"]
                if view["network_type"] == "bridged":
                    from maqet_engine import hostnet  # not on ls's path otherwise

                    with contextlib.suppress(Exception):
                        view["tap"] = hostnet.tap_name(paths.data, record.id, index)
        views.append(view)
    return views


# --- the host side of a start ---------------------------------------------------------------
class HostSide:
    """What one QEMU command line needs of this host for a VM's named networks: a
    backend per NIC position (see ``definition.network.network_argv``), the fds to pass
    (tap devices: owned by this object until :meth:`close`), the segments whose sockets
    the runner confines (interface, TTL), and the networks' hashes to record with the
    start."""

    def __init__(self) -> None:
        self.backends: dict[int, dict[str, Any]] = {}
        self.fds: list[int] = []
        self.multicast: list[tuple[str, int, int]] = []
        self.started: dict[str, str] = {}

    def launch_data(self) -> dict[str, Any]:
        """The runner's launch data beside ``qemu_argv`` (``runner/__main__.py``)."""
        return {"fds": list(self.fds),
                "multicast": [list(t) for t in self.multicast],
                "started_networks": json.dumps(self.started, sort_keys=True)}

    def close(self) -> None:
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())


def resolve(paths: Paths, record: VMRecord, networks: Networks, *,
            launching: bool) -> HostSide:
    """The host side of ``record``'s named networks. ``launching``: for a start, so a
    missing network or interface is an error and tap devices are opened (close the
    result); a view gets placeholders instead and changes nothing on the host.

    :raise NetworkNotFound: a NIC names a network that is gone (launching).
    :raise HostError: an interface without IPv4 address, no bridge, not root (launching).
    """
    from maqet_engine import hostnet
    from maqet_engine.definition.netspec import link_ends
    from maqet_engine.errors import MaqetError

    host = HostSide()
    try:
        for index, nic in named_nics(record.spec_data):
            network = networks.get(str(nic["network"]))
            if network is None:
                if launching:
                    raise NetworkNotFound(str(nic["network"]),
                                          used_by=f"network[{index}] of VM {record.name!r}")
                host.backends[index] = {"kind": "segment", "group": "MISSING-NETWORK",
                                        "port": 0, "address": "MISSING-NETWORK"}
                continue
            data = network.spec_data
            host.started[network.name] = network.spec_hash
            if data["type"] == "segment":
                try:
                    address = hostnet.interface_ipv4(data["interface"])
                except MaqetError:
                    if launching:
                        raise
                    address = f"ADDRESS-OF-{data['interface']}"
                host.backends[index] = {"kind": "segment", "group": data["group"],
                                        "port": data["port"], "address": address}
                host.multicast.append((data["group"], data["port"], data["ttl"]))
            elif data["type"] == "link":
                local, remote = link_ends(data, str(nic.get("end") or C.LINK_ENDS[0]))
                host.backends[index] = {"kind": "link", "local": local, "remote": remote}
            else:
                fd: int | str = C.NIC_FD_PLACEHOLDER.format(index=index)
                if launching:
                    tap = hostnet.tap_name(paths.data, record.id, index)
                    fd = hostnet.open_tap(tap, data["bridge"])
                    host.fds.append(fd)
                host.backends[index] = {"kind": "bridged", "fd": fd}
    except BaseException:
        host.close()
        raise
    return host


@contextlib.contextmanager
def prepare(paths: Paths, store: Store, record: VMRecord) -> Iterator[HostSide]:
    """The host side of a start; the tap fds opened here are closed on exit (the runner
    holds its own copies by then, and QEMU after it)."""
    host = resolve(paths, record, network_index(store), launching=True)
    try:
        yield host
    finally:
        host.close()


def cleanup_taps(paths: Paths, record: VMRecord) -> list[str]:
    """Delete leftover tap devices of ``record``'s NICs that nobody holds (only a
    persistent device can outlive its QEMU; see ``hostnet``). Returns their names."""
    from maqet_engine import hostnet

    removed = []
    for index, _nic in named_nics(record.spec_data):
        with contextlib.suppress(Exception):
            name = hostnet.tap_name(paths.data, record.id, index)
            if hostnet.remove_leftover_tap(name):
                removed.append(name)
    return removed
