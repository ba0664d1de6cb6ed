"""Named networks: their definitions, checked and normalized like a VM's.

A network is a named object that VMs attach to by name (a NIC of ``type: network``).
Three types, none of which needs a daemon or a switch of maqet's own:

- ``segment``: an Ethernet segment carried in UDP multicast by QEMU's ``dgram``
  netdev; every VM on it is on one L2 broadcast domain, on one host (``interface:
  lo``) or across hypervisors (the interface that reaches them). No privileges.
- ``link``: a point-to-point Ethernet link between exactly two VMs, UDP unicast
  between its two ends ``a`` and ``b`` (``ADDRESS:PORT`` each); on one host or two.
- ``bridged``: an existing host bridge; each VM's NIC is a tap device that maqet
  creates (root only), attaches to the bridge, and that vanishes with QEMU.

Undefined ``group``/``port`` of a segment and ports of a link are derived from the
network's *name*, so the same name on two hosts is the same network, and two names
differ (a clash is detected when the second is stored: see ``endpoints``).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from maqet_engine import constants as C
from maqet_engine.definition.check import check_data, check_keys, check_section, join, show
from maqet_engine.definition.model import Spec
from maqet_engine.definition.schema import Field, Kind, Section
from maqet_engine.errors import ConfigError


@dataclass(frozen=True, eq=False)
class NetworkSpec(Spec):
    """A parsed, validated, normalized network definition (build it with
    :func:`parse_network`); every key is present, derived values filled in."""

    @property
    def type(self) -> str:
        return str(self.data["type"])


COMMON = (
    Field("name", Kind.STR, "Name of the network, unique in the maqet installation; VMs "
          "name it in a NIC's `network`. The same name on two hosts derives the same "
          "segment (group and port) or link ports.", required=True,
          pattern=C.NETWORK_NAME_RE, pattern_help=C.NETWORK_NAME_HELP, what="network name"),
    Field("type", Kind.ENUM, "Kind of network; decides which other keys apply.",
          required=True, choices=C.NETWORK_KINDS),
)

KINDS: Mapping[str, Section] = MappingProxyType({
    "segment": Section(
        title="network definition, type `segment`",
        where="",
        doc="An Ethernet segment in UDP multicast (QEMU's `dgram` netdev): every VM "
            "attached is on one broadcast domain. Needs no privileges. Everyone who can "
            "join the group on that interface is on the segment too (see "
            "[networks.md](networks.md#what-is-exposed-to-whom)).",
        fields=COMMON + (
            Field("interface", Kind.STR, "Host interface that carries the segment: QEMU "
                  "joins the group and sends on the interface with this name (through its "
                  "IPv4 address, looked up when a VM starts). `lo` keeps the segment on "
                  "this host; name the interface that reaches the other hypervisors to "
                  "span them. Never every interface.",
                  default=C.DEFAULT_SEGMENT_INTERFACE, pattern=C.IFNAME_RE,
                  pattern_help=C.IFNAME_HELP, what="interface name"),
            Field("group", Kind.IPV4, "IPv4 multicast group of the segment.",
                  default_doc="`239.255.X.Y` derived from the name",
                  pattern_help="a multicast address, 224.0.1.0 to 239.255.255.255 "
                  "except 232.0.0.0/8; best in 239.0.0.0/8"),
            Field("port", Kind.INT, "UDP port of the segment.",
                  minimum=C.NETWORK_PORT_MIN, maximum=C.PORT_MAX,
                  default_doc="20000-29999, derived from the name"),
            Field("ttl", Kind.INT, "IP time-to-live of the segment's packets. 1: they "
                  "never leave the link (no multicast router forwards them). Raise it only "
                  "to cross multicast routers you run.", default=C.DEFAULT_SEGMENT_TTL,
                  minimum=1, maximum=255),
        ),
    ),
    "link": Section(
        title="network definition, type `link`",
        where="",
        doc="A point-to-point Ethernet link between two VMs: UDP datagrams between its "
            "ends `a` and `b` (QEMU's `dgram` netdev). The VM whose NIC says `end: a` "
            "receives on `a` and sends to `b`, and the other way round; either may "
            "(re)start first. Needs no privileges.",
        fields=COMMON + (
            Field("a", Kind.STR, "End `a`: `ADDRESS:PORT` the VM on this end receives on "
                  "(a local address of its host).", pattern=C.LINK_END_RE,
                  pattern_help=C.LINK_END_HELP, what="link end",
                  default_doc="`127.0.0.1:P`, P in 30000-31998 derived from the name"),
            Field("b", Kind.STR, "End `b`, likewise.", pattern=C.LINK_END_RE,
                  pattern_help=C.LINK_END_HELP, what="link end",
                  default_doc="`127.0.0.1:P+1`"),
        ),
    ),
    "bridged": Section(
        title="network definition, type `bridged`",
        where="",
        doc="An existing host bridge (like libvirt's `bridge` network): at each start "
            "maqet creates a tap device per NIC, attaches it to the bridge and hands it "
            "to QEMU; the device disappears when QEMU exits, however it ends. Starting "
            "a VM on it needs root.",
        fields=COMMON + (
            Field("bridge", Kind.STR, "Name of the host bridge (it must exist when a VM "
                  "starts; maqet never creates or changes it).", required=True,
                  pattern=C.IFNAME_RE, pattern_help=C.IFNAME_HELP, what="bridge name"),
        ),
    ),
})

_RESERVED_GROUPS = (
    (ipaddress.ip_network("224.0.0.0/24"), "reserved for local network control (IGMP, "
     "routing protocols)"),
    (ipaddress.ip_network("232.0.0.0/8"), "source-specific multicast, which QEMU does not "
     "join"),
)


def _digest(name: str) -> bytes:
    return hashlib.sha256(f"maqet-network:{name}".encode()).digest()


def derived_segment(name: str) -> tuple[str, int]:
    """``(group, port)`` a segment named ``name`` gets when its definition gives none."""
    h = _digest(name)
    base = ipaddress.IPv4Address(C.SEGMENT_GROUP_BASE)
    group = base + (h[0] % C.SEGMENT_GROUP_SECOND_OCTETS) * 256 + h[1]
    port = C.SEGMENT_PORT_BASE + int.from_bytes(h[2:4], "big") % C.SEGMENT_PORT_SPAN
    return str(group), port


def derived_link_port(name: str) -> int:
    """Port of end ``a`` of a link named ``name`` (end ``b``: the next one)."""
    h = _digest(name)
    return C.LINK_PORT_BASE + 2 * (int.from_bytes(h[4:6], "big") % C.LINK_PORT_PAIRS)


def parse_network(raw: Mapping[str, Any]) -> NetworkSpec:
    """Validate and normalize a network definition.

    :raise ConfigError: the first problem found, with its key path.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the network definition is {show(raw)}, not a mapping",
                          hint="write it as 'key: value' lines: name, type, ...")
    check_data(raw)
    type_name = raw.get("type")
    all_keys = sorted({f.key for section in KINDS.values() for f in section.fields})
    if type_name is None:
        check_keys(raw, all_keys, "")
        raise ConfigError("is required", path="type",
                          hint=f"use one of {', '.join(C.NETWORK_KINDS)}")
    if not isinstance(type_name, str) or type_name not in KINDS:
        raise ConfigError(f"{show(type_name)} is not a network type", path="type",
                          hint=f"use one of {', '.join(C.NETWORK_KINDS)}")
    elsewhere = {other: section.keys() for other, section in KINDS.items()
                 if other != type_name}
    data = check_section(raw, KINDS[type_name].fields, "", None, elsewhere)
    if type_name == "segment":
        _normalize_segment(data)
    elif type_name == "link":
        _normalize_link(data)
    return NetworkSpec(data)


def _normalize_segment(data: dict[str, Any]) -> None:
    group, port = derived_segment(data["name"])
    if data["group"] is None:
        data["group"] = group
    if data["port"] is None:
        data["port"] = port
    address = ipaddress.IPv4Address(data["group"])
    if not address.is_multicast:
        raise ConfigError(f"{show(data['group'])} is not a multicast address", path="group",
                          hint="use an address of 239.0.0.0/8 (administratively scoped), "
                          "or leave it out to derive one from the name")
    for reserved, why in _RESERVED_GROUPS:
        if address in reserved:
            raise ConfigError(f"{show(data['group'])} is in {reserved}: {why}",
                              path="group", hint="use an address of 239.0.0.0/8")


def _normalize_link(data: dict[str, Any]) -> None:
    port = derived_link_port(data["name"])
    for offset, end in enumerate(C.LINK_ENDS):
        value = data[end]
        if value is None:
            data[end] = f"{C.DEFAULT_LINK_ADDRESS}:{port + offset}"
            continue
        host, _, port_text = value.partition(":")
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"{show(value)}: {show(host)} is not an IPv4 address",
                              path=end, hint=f"use {C.LINK_END_HELP}") from None
        if address.is_multicast or address.is_unspecified or host == "255.255.255.255":
            raise ConfigError(f"{show(value)}: a link end is one host's unicast address",
                              path=end, hint=f"use {C.LINK_END_HELP}")
        number = int(port_text) if port_text else port + offset
        if not C.NETWORK_PORT_MIN <= number <= C.PORT_MAX:
            raise ConfigError(f"{show(value)}: port {number} is out of range", path=end,
                              hint=f"use a port from {C.NETWORK_PORT_MIN} to {C.PORT_MAX}")
        data[end] = f"{address}:{number}"
    if data["a"] == data["b"]:
        raise ConfigError(f"both ends are {data['a']}", path="b",
                          hint="give the ends different ports (or addresses)")


def endpoints(data: Mapping[str, Any]) -> list[str]:
    """The host UDP endpoints a network claims, as stored (``udp:ADDRESS:PORT``): two
    networks claiming one would receive each other's traffic."""
    if data["type"] == "segment":
        return [f"udp:{data['group']}:{data['port']}"]
    if data["type"] == "link":
        return [f"udp:{data[end]}" for end in C.LINK_ENDS]
    return []


def describe(data: Mapping[str, Any]) -> str:
    """One line for people: ``239.255.3.7:24511 on lo (ttl 1)``, ``127.0.0.1:30100 <->
    127.0.0.1:30101``, ``bridge br0``."""
    if data["type"] == "segment":
        return f"{data['group']}:{data['port']} on {data['interface']} (ttl {data['ttl']})"
    if data["type"] == "link":
        return f"{data['a']} <-> {data['b']}"
    return f"bridge {data['bridge']}"


def link_ends(data: Mapping[str, Any], end: str) -> tuple[str, str]:
    """``(local, remote)`` of a link seen from its end ``end``."""
    other = C.LINK_ENDS[1 - C.LINK_ENDS.index(end)]
    return str(data[end]), str(data[other])


def check_nic(nic: Mapping[str, Any], network: Mapping[str, Any], path: str) -> None:
    """A NIC of ``type: network`` fits the network it names: ``end`` exactly on links."""
    end = nic.get("end")
    if network["type"] == "link" and end is None:
        raise ConfigError(f"network {network['name']!r} is a link: say which end this NIC is",
                          path=join(path, "end"), hint="add 'end: a' or 'end: b'")
    if network["type"] != "link" and end is not None:
        raise ConfigError(f"network {network['name']!r} is a {network['type']}, which has "
                          "no ends", path=join(path, "end"), hint="remove 'end'")
