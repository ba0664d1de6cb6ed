"""Named networks: network definitions (netspec), NICs of ``type: network``, their argv."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from maqet_engine import constants as C
from maqet_engine.definition import Spec
from maqet_engine.definition.netspec import (
    check_nic,
    derived_link_port,
    derived_segment,
    describe,
    endpoints,
    link_ends,
    parse_network,
)
from maqet_engine.definition.network import derived_mac, network_argv
from maqet_engine.errors import ConfigError

Parse = Callable[..., Spec]


def test_segment_defaults_are_written_out_and_derived_from_the_name():
    spec = parse_network({"name": "lab", "type": "segment"})
    group, port = derived_segment("lab")
    assert spec.data == {"name": "lab", "type": "segment", "interface": "lo", "group": group,
                         "port": port, "ttl": 1}
    assert ipaddress.IPv4Address(group) in ipaddress.ip_network("239.255.0.0/16")
    assert not group.startswith("239.255.255.")  # SSDP/SLP live there
    assert C.SEGMENT_PORT_BASE <= port < C.SEGMENT_PORT_BASE + C.SEGMENT_PORT_SPAN
    # Stable: the same name derives the same segment on every host and every run.
    assert parse_network({"name": "lab", "type": "segment", "group": group, "port": port,
                          "interface": "lo", "ttl": "1"}).hash == spec.hash
    assert derived_segment("lab2") != derived_segment("lab")
    assert endpoints(spec.data) == [f"udp:{group}:{port}"]
    assert describe(spec.data) == f"{group}:{port} on lo (ttl 1)"


def test_derived_groups_spread():
    pairs = {derived_segment(f"net{i}") for i in range(500)}
    assert len(pairs) == 500


def test_link_defaults_and_ends():
    spec = parse_network({"name": "wire", "type": "link"})
    port = derived_link_port("wire")
    assert port % 2 == 0 and C.LINK_PORT_BASE <= port < C.LINK_PORT_BASE + 2 * C.LINK_PORT_PAIRS
    assert spec.data == {"name": "wire", "type": "link", "a": f"127.0.0.1:{port}",
                         "b": f"127.0.0.1:{port + 1}"}
    assert link_ends(spec.data, "a") == (f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}")
    assert link_ends(spec.data, "b") == (f"127.0.0.1:{port + 1}", f"127.0.0.1:{port}")
    two_hosts = parse_network({"name": "wire", "type": "link", "a": "10.0.0.1",
                               "b": "10.0.0.2:31000"})
    assert (two_hosts.data["a"], two_hosts.data["b"]) == (f"10.0.0.1:{port}", "10.0.0.2:31000")
    assert endpoints(two_hosts.data) == [f"udp:10.0.0.1:{port}", "udp:10.0.0.2:31000"]


def test_bridged():
    spec = parse_network({"name": "br", "type": "bridged", "bridge": "br0"})
    assert spec.data == {"name": "br", "type": "bridged", "bridge": "br0"}
    assert endpoints(spec.data) == [] and describe(spec.data) == "bridge br0"


@pytest.mark.parametrize(("raw", "message"), [
    ({"name": "x"}, "type: is required; use one of segment, link, bridged"),
    ({"name": "x", "type": "lan"}, "type: 'lan' is not a network type"),
    ({"type": "segment"}, "name: is required"),
    ({"name": "x y", "type": "segment"}, "name: 'x y' is not a valid network name"),
    ({"name": "x", "type": "segment", "bridge": "br0"},
     "bridge: unknown key for this type; it belongs to type bridged"),
    ({"name": "x", "type": "segment", "interfce": "lo"}, "did you mean 'interface'"),
    ({"name": "x", "type": "segment", "group": "10.1.2.3"}, "is not a multicast address"),
    ({"name": "x", "type": "segment", "group": "224.0.0.251"}, "reserved for local network"),
    ({"name": "x", "type": "segment", "group": "232.1.1.1"}, "source-specific multicast"),
    ({"name": "x", "type": "segment", "port": 80}, "port: 80 is out of range"),
    ({"name": "x", "type": "segment", "ttl": 0}, "ttl: 0 is out of range"),
    ({"name": "x", "type": "segment", "interface": "a/b"}, "is not a valid interface name"),
    ({"name": "x", "type": "link", "a": "localhost:3000"}, "is not a valid link end"),
    ({"name": "x", "type": "link", "a": "10.0.0.300:3000"}, "is not an IPv4 address"),
    ({"name": "x", "type": "link", "a": "239.1.1.1:3000"}, "one host's unicast address"),
    ({"name": "x", "type": "link", "a": "10.0.0.1:99999"}, "port 99999 is out of range"),
    ({"name": "x", "type": "link", "a": "10.0.0.1:3000", "b": "10.0.0.1:3000"},
     "b: both ends are 10.0.0.1:3000"),
    ({"name": "x", "type": "bridged"}, "bridge: is required"),
    ({"name": "x", "type": "segment", "interface": "lo", "ttl": True}, "is not an integer"),
    ("lab", "not a mapping"),
])
def test_bad_network_definitions(raw: Any, message: str):
    with pytest.raises(ConfigError) as err:
        parse_network(raw)
    assert message in str(err.value)


# --- NICs on named networks ------------------------------------------------------------------
def nics(parse: Parse, *entries: dict[str, Any], name: str = "vm") -> list[dict[str, Any]]:
    return parse({"name": name, "network": list(entries)}).data["network"]


def test_nic_type_may_be_left_out_and_the_mac_is_derived(parse: Parse):
    user, lab = nics(parse, {"type": "user"}, {"network": "lab"})
    assert lab == {"type": "network", "network": "lab", "model": "virtio-net-pci",
                   "mac": derived_mac("vm", 1), "end": None}
    assert user["mac"] is None  # user networking keeps QEMU's choice, as before
    assert lab["mac"].startswith("52:54:00:") and int(lab["mac"][:2], 16) & 0x03 == 0x02
    # Stable per VM name and position; another VM or position gets another one.
    assert nics(parse, {"type": "user"}, {"network": "lab"}) == [user, lab]
    assert nics(parse, {"network": "lab"})[0]["mac"] == derived_mac("vm", 0) != lab["mac"]
    assert nics(parse, {"type": "user"}, {"network": "lab"}, name="vm2")[1]["mac"] != lab["mac"]
    # A given MAC is kept; the derived one spelled out means the same VM.
    given = nics(parse, {"network": "lab", "mac": "52:54:00:AA:BB:CC", "end": "b"})[0]
    assert given["mac"] == "52:54:00:aa:bb:cc" and given["end"] == "b"
    spelled = parse({"name": "vm", "network": [{"type": "user"},
                                                {"network": "lab", "mac": lab["mac"]}]})
    assert spelled.hash == parse({"name": "vm", "network": [{"type": "user"},
                                                            {"network": "lab"}]}).hash


@pytest.mark.parametrize(("entry", "message"), [
    ({"type": "network"}, "network[0].network: is required"),
    ({"network": "lab", "end": "c"}, "network[0].end: 'c' is not allowed"),
    ({"network": "lab", "forward": []}, "belongs to type user"),
    ({"type": "user", "network": "lab"}, "belongs to type network"),
    ({"network": "l a b"}, "is not a valid network name"),
])
def test_bad_nics(parse: Parse, entry: dict[str, Any], message: str):
    with pytest.raises(ConfigError) as err:
        nics(parse, entry)
    assert message in str(err.value)


def test_two_nics_of_one_vm_may_not_share_a_mac(parse: Parse):
    with pytest.raises(ConfigError, match="already used by network\\[0\\]"):
        nics(parse, {"network": "a", "mac": "52:54:00:00:00:01"},
             {"network": "b", "mac": "52:54:00:00:00:01"})


def test_check_nic_wants_an_end_exactly_on_links():
    link = parse_network({"name": "wire", "type": "link"}).data
    segment = parse_network({"name": "lab", "type": "segment"}).data
    check_nic({"end": "a"}, link, "network[1]")
    check_nic({"end": None}, segment, "network[1]")
    with pytest.raises(ConfigError, match="network\\[1\\].end: network 'wire' is a link"):
        check_nic({"end": None}, link, "network[1]")
    with pytest.raises(ConfigError, match="'lab' is a segment, which has no ends"):
        check_nic({"end": "a"}, segment, "network[1]")


NIC = {"type": "network", "network": "n", "model": "virtio-net-pci",
       "mac": "52:54:00:01:02:03", "end": None}


@pytest.mark.parametrize(("backend", "netdev"), [
    ({"kind": "segment", "group": "239.255.1.2", "port": 20001, "address": "127.0.0.1"},
     "dgram,id=net2,remote.type=inet,remote.host=239.255.1.2,remote.port=20001,"
     "local.type=inet,local.host=127.0.0.1,local.port=0"),
    ({"kind": "link", "local": "127.0.0.1:30000", "remote": "10.0.0.2:30001"},
     "dgram,id=net2,local.type=inet,local.host=127.0.0.1,local.port=30000,"
     "remote.type=inet,remote.host=10.0.0.2,remote.port=30001"),
    ({"kind": "bridged", "fd": 7}, "tap,id=net2,fd=7"),
    ({"kind": "bridged", "fd": "NIC2_FD"}, "tap,id=net2,fd=NIC2_FD"),
])
def test_named_network_argv(backend: dict[str, Any], netdev: str):
    assert network_argv(NIC, 2, backend) == [
        "-netdev", netdev, "-device", "virtio-net-pci,netdev=net2,mac=52:54:00:01:02:03"]


def test_named_network_argv_needs_its_backend():
    with pytest.raises(ValueError, match="was not resolved"):
        network_argv(NIC, 0)
