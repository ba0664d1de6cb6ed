"""Network entries: defaults, normalization and argv."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from maqet_engine.definition import Spec
from maqet_engine.definition.network import network_argv
from maqet_engine.errors import ConfigError

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


def test_auto_host_ports(parse: Parse):
    """``host: auto`` is kept in the spec (it never changes between starts) and given to
    QEMU as port 0, which slirp binds to a free port itself."""
    [user] = nics(parse, {"type": "user", "forward": [
        {"host": "auto", "guest": 80},
        {"host": 2222, "guest": 22},
        {"host": "auto", "guest": 22},
        {"host": "auto", "guest": 53, "protocol": "udp"},
    ]})
    assert user["forward"] == [
        {"host": 2222, "guest": 22, "protocol": "tcp", "host_address": "127.0.0.1"},
        {"host": "auto", "guest": 22, "protocol": "tcp", "host_address": "127.0.0.1"},
        {"host": "auto", "guest": 80, "protocol": "tcp", "host_address": "127.0.0.1"},
        {"host": "auto", "guest": 53, "protocol": "udp", "host_address": "127.0.0.1"},
    ]
    assert network_argv(user, 0)[1] == (
        "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:0-:22,"
        "hostfwd=tcp:127.0.0.1:0-:80,hostfwd=udp:127.0.0.1:0-:53")
    same = nics(parse, {"type": "user", "forward": [
        {"host": "auto", "guest": 53, "protocol": "udp"}, {"host": "auto", "guest": 22},
        {"host": 2222, "guest": 22}, {"host": "auto", "guest": 80}]})
    assert same == [user]  # order does not matter: the same spec


def test_numbered_ports_keep_their_order_and_hash(parse: Parse):
    """Specs written before ``auto`` existed normalize exactly as before."""
    spec = parse({"name": "vm", "network": [{"type": "user", "forward": [
        {"host": 8080, "guest": 80}, {"host": 2222, "guest": 22}]}]})
    assert [f["host"] for f in spec.data["network"][0]["forward"]] == [2222, 8080]


@pytest.mark.parametrize("host", ["automatic", "", None, 0, -1, 70000, True])
def test_bad_host_ports_say_auto_is_allowed(parse: Parse, host: Any):
    with pytest.raises(ConfigError) as caught:
        nics(parse, {"type": "user", "forward": [{"host": host, "guest": 22}]})
    assert caught.value.path == "network[0].forward[0].host"
    if host is not None:
        assert "or auto (a free port at each start)" in str(caught.value)
