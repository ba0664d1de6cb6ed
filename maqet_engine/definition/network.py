"""Network entries (NICs): validation of the ``network`` list and their QEMU arguments.

A NIC of ``type: network`` names a *named network* (:mod:`.netspec`); what it needs on
the host (the interface's address, a tap device's fd) is resolved by the engine when the
VM starts and handed to :func:`network_argv` as a backend, so this stays pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from maqet_engine import constants as C
from maqet_engine.definition.check import (
    check_section,
    join,
    require_list,
    require_mapping,
    show,
)
from maqet_engine.definition.schema import FORWARD, NETWORK_TYPES
from maqet_engine.errors import ConfigError

_MULTICAST_BIT = 0x01


def netdev_id(index: int) -> str:
    """Id of the ``index``-th NIC's backend: ``net0``, ``net1``, ..."""
    return f"{C.NETDEV_ID_PREFIX}{index}"


def derived_mac(vm_name: str, index: int) -> str:
    """The MAC of the ``index``-th NIC of VM ``vm_name`` when its definition gives none:
    ``52:54:00`` and three bytes of a hash of both, so the same VM gets the same
    addresses on every start and every host (and a renamed VM new ones)."""
    digest = hashlib.sha256(f"maqet-nic:{vm_name}:{index}".encode()).digest()
    return C.DERIVED_MAC_PREFIX + "".join(f":{byte:02x}" for byte in digest[:3])


def normalize_network(items: object, *, path: str, vm_name: str = "") -> list[dict[str, Any]]:
    """Validate and normalize the ``network`` list (``vm_name`` derives the MACs of
    NICs on named networks)."""
    entries: list[dict[str, Any]] = []
    macs: dict[str, str] = {}
    ports: dict[tuple[str, int], str] = {}
    for index, raw in enumerate(require_list(items, path, "[{type: user}]")):
        here = join(path, index)
        entry = _normalize_entry(require_mapping(raw, here, "a network entry"), here)
        if entry["type"] == "network" and entry["mac"] is None:
            entry["mac"] = derived_mac(vm_name, index)
        mac = entry["mac"]
        if mac is not None:
            if int(mac[:2], 16) & _MULTICAST_BIT:
                raise ConfigError(f"{show(mac)} is a multicast address", path=join(here, "mac"),
                                  hint="a NIC needs a unicast address (even first byte) such "
                                  "as 52:54:00:12:34:56")
            if mac in macs:
                raise ConfigError(f"{show(mac)} is already used by {macs[mac]}",
                                  path=join(here, "mac"), hint="give each NIC its own MAC")
            macs[mac] = here
        if entry["type"] == "user":
            entry["forward"] = _normalize_forwards(entry["forward"], join(here, "forward"),
                                                   ports)
        entries.append(entry)
    return entries


def _normalize_entry(raw: Mapping[Any, Any], path: str) -> dict[str, Any]:
    type_name = raw.get("type")
    if type_name is None and raw.get("network") is not None:  # {network: lab}
        type_name = "network"
        raw = {**raw, "type": type_name}
    choices = ", ".join(NETWORK_TYPES)
    if type_name is None:
        raise ConfigError("is required", path=join(path, "type"), hint=f"use one of {choices}")
    if not isinstance(type_name, str) or type_name not in NETWORK_TYPES:
        raise ConfigError(f"{show(type_name)} is not a network type", path=join(path, "type"),
                          hint=f"use one of {choices}")
    elsewhere = {other: section.keys() for other, section in NETWORK_TYPES.items()
                 if other != type_name}
    return check_section(raw, NETWORK_TYPES[type_name].fields, path, None, elsewhere)


def _normalize_forwards(items: list[Any], path: str,
                        ports: dict[tuple[str, int], str]) -> list[dict[str, Any]]:
    forwards: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        here = join(path, index)
        entry = require_mapping(raw, here, "a forward entry")
        auto = entry.get("host") == C.FORWARD_AUTO  # QEMU binds a free port at each start
        if auto:
            entry = {**entry, "host": C.PORT_MIN}  # checked as any port, then put back
        try:
            fwd = check_section(entry, FORWARD.fields, here, None)
        except ConfigError as err:
            if err.path != join(here, "host"):
                raise
            raise ConfigError(err.message.removeprefix(f"{err.path}: "), path=err.path,
                              hint=f"{err.hint}, or {C.FORWARD_AUTO} (a free port at each "
                              "start)") from None
        if auto:
            fwd["host"] = C.FORWARD_AUTO
            forwards.append(fwd)
            continue
        key = (fwd["protocol"], fwd["host"])
        if key in ports:
            raise ConfigError(f"{fwd['host']}/{fwd['protocol']} is already forwarded by "
                              f"{ports[key]}", path=join(here, "host"),
                              hint="each host port can be forwarded once per protocol")
        ports[key] = here
        forwards.append(fwd)
    return sorted(forwards, key=_forward_order)


def _forward_order(fwd: Mapping[str, Any]) -> tuple[Any, ...]:
    """Protocol, address, then host port; ``auto`` ports after numbered ones, by guest
    port (numbered ones compare as before, so their specs keep their hash)."""
    auto = fwd["host"] == C.FORWARD_AUTO
    return (fwd["protocol"], fwd["host_address"], auto, 0 if auto else fwd["host"],
            fwd["guest"] if auto else 0)


def _host_port(fwd: Mapping[str, Any]) -> int:
    """The host port QEMU gets: ``auto`` is 0, which slirp binds to a free port itself
    (no race between choosing a port and binding it)."""
    return 0 if fwd["host"] == C.FORWARD_AUTO else int(fwd["host"])


def network_argv(entry: Mapping[str, Any], index: int,
                 backend: Mapping[str, Any] | None = None) -> list[str]:
    """``-netdev`` and ``-device`` arguments of the ``index``-th normalized entry.

    :param backend: for a NIC of ``type: network``, the host side the engine resolved
        (:func:`maqet_engine.definition.netspec.backend`): ``{"kind": "segment", "group",
        "port", "address"}`` (QEMU joins the group on the interface with that IPv4
        address and sends from it), ``{"kind": "link", "local", "remote"}``
        (``ADDRESS:PORT`` each) or ``{"kind": "bridged", "fd"}`` (an open tap device).
    """
    nid = netdev_id(index)
    match entry["type"]:
        case "user":
            netdev = f"user,id={nid}" + "".join(
                f",hostfwd={f['protocol']}:{f['host_address']}:{_host_port(f)}-:{f['guest']}"
                for f in entry["forward"]
            )
        case "tap":
            netdev = f"tap,id={nid},ifname={entry['ifname']},script=no,downscript=no"
        case "bridge":
            netdev = f"bridge,id={nid},br={entry['bridge']}"
        case "network":
            netdev = _named_netdev(nid, entry, backend)
        case other:  # pragma: no cover - validation admits only the types above
            raise ValueError(f"unknown network type {other!r}")
    device = f"{entry['model']},netdev={nid}"
    if entry["mac"] is not None:
        device += f",mac={entry['mac']}"
    return ["-netdev", netdev, "-device", device]


def _named_netdev(nid: str, entry: Mapping[str, Any], backend: Mapping[str, Any] | None) -> str:
    if backend is None:  # the engine resolves every named network before building argv
        raise ValueError(f"network {entry['network']!r} of {nid} was not resolved")
    match backend["kind"]:
        case "segment":
            # QEMU's multicast dgram socket: joins the group on the interface that has
            # 'address' and sends from it (IP_MULTICAST_IF); without local.host it would
            # join on the interface of the default route. local.port is unused but needed.
            return (f"dgram,id={nid},remote.type=inet,remote.host={backend['group']},"
                    f"remote.port={backend['port']},local.type=inet,"
                    f"local.host={backend['address']},local.port=0")
        case "link":
            local_host, local_port = str(backend["local"]).rsplit(":", 1)
            remote_host, remote_port = str(backend["remote"]).rsplit(":", 1)
            return (f"dgram,id={nid},local.type=inet,local.host={local_host},"
                    f"local.port={local_port},remote.type=inet,remote.host={remote_host},"
                    f"remote.port={remote_port}")
        case "bridged":
            # A tap device maqet opened (and attached to the bridge) before QEMU started:
            # QEMU needs neither /dev/net/tun nor a helper, and keeps working after -runas.
            return f"tap,id={nid},fd={backend['fd']}"
    raise ValueError(f"unknown network backend {backend['kind']!r}")  # pragma: no cover
