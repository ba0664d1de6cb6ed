"""Network entries: defaults, normalization and argv."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from maqet_engine.definition import Spec
from maqet_engine.definition.network import network_argv

Parse = Callable[..., Spec]


def nics(parse: Parse, *entries: dict[str, Any]) -> list[dict[str, Any]]:
    return parse({"name": "vm", "network": list(entries)}).data["network"]


def test_defaults(parse: Parse):
    user, tap, bridge = nics(parse, {"type": "user"}, {"type": "tap", "ifname": "tap0"},
                             {"type": "bridge", "bridge": "br0"})
    assert user == {"type": "user", "model": "virtio-net-pci", "mac": None, "forward": []}
    assert tap == {"type": "tap", "model": "virtio-net-pci", "mac": None, "ifname": "tap0"}
    assert bridge == {"type": "bridge", "model": "virtio-net-pci", "mac": None, "bridge": "br0"}


def test_forwards_get_defaults_and_sort(parse: Parse):
    [user] = nics(parse, {"type": "user", "forward": [
        {"host": 8080, "guest": 80},
        {"host": 5353, "guest": 53, "protocol": "udp"},
        {"host": 2222, "guest": 22, "host_address": "0.0.0.0"},
        {"host": 2222, "guest": 2222, "protocol": "udp"},
    ]})
    assert user["forward"] == [
        {"host": 2222, "guest": 22, "protocol": "tcp", "host_address": "0.0.0.0"},
        {"host": 8080, "guest": 80, "protocol": "tcp", "host_address": "127.0.0.1"},
        {"host": 2222, "guest": 2222, "protocol": "udp", "host_address": "127.0.0.1"},
        {"host": 5353, "guest": 53, "protocol": "udp", "host_address": "127.0.0.1"},
    ]


def test_mac_is_lower_cased(parse: Parse):
    [nic] = nics(parse, {"type": "user", "mac": "52:54:00:AB:CD:EF", "model": "e1000"})
    assert nic["mac"] == "52:54:00:ab:cd:ef" and nic["model"] == "e1000"


ARGV_CASES = [
    ({"type": "user", "model": "virtio-net-pci", "mac": None, "forward": []}, 0,
     ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"]),
    ({"type": "user", "model": "e1000", "mac": "52:54:00:00:00:01", "forward": [
        {"host": 2222, "guest": 22, "protocol": "tcp", "host_address": "127.0.0.1"},
        {"host": 5353, "guest": 53, "protocol": "udp", "host_address": "0.0.0.0"}]}, 1,
     ["-netdev", "user,id=net1,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:0.0.0.0:5353-:53",
      "-device", "e1000,netdev=net1,mac=52:54:00:00:00:01"]),
    ({"type": "tap", "model": "virtio-net-pci", "mac": None, "ifname": "tap0"}, 2,
     ["-netdev", "tap,id=net2,ifname=tap0,script=no,downscript=no",
      "-device", "virtio-net-pci,netdev=net2"]),
    ({"type": "bridge", "model": "rtl8139", "mac": None, "bridge": "br0"}, 3,
     ["-netdev", "bridge,id=net3,br=br0", "-device", "rtl8139,netdev=net3"]),
]


@pytest.mark.parametrize(("entry", "index", "expected"), ARGV_CASES,
                         ids=["user", "user-forwards-mac", "tap", "bridge"])
def test_network_argv(entry: dict[str, Any], index: int, expected: list[str]):
    assert network_argv(entry, index) == expected
