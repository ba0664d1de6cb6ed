"""The host side of named networks that needs no privileges: interface addresses and
tap device names."""

from __future__ import annotations

from pathlib import Path

import pytest

from maqet_engine import hostnet
from maqet_engine.errors import HostError


def test_loopback_address():
    assert hostnet.interface_exists("lo")
    assert hostnet.interface_ipv4("lo") == "127.0.0.1"


def test_missing_interface_says_so():
    assert not hostnet.interface_exists("mqt-nosuch0")
    with pytest.raises(HostError, match="interface 'mqt-nosuch0' does not exist"):
        hostnet.interface_ipv4("mqt-nosuch0")


def test_tap_names_are_deterministic_short_and_per_installation(tmp_path: Path):
    one, two = tmp_path / "a" / "data", tmp_path / "b" / "data"
    assert hostnet.tap_name(one, 1, 0) == hostnet.tap_name(one, 1, 0)
    assert hostnet.tap_name(one, 1, 0) != hostnet.tap_name(two, 1, 0)
    assert hostnet.tap_name(one, 1, 0) != hostnet.tap_name(one, 1, 1)
    assert hostnet.tap_name(one, 0x11, 0) != hostnet.tap_name(one, 1, 10)
    longest = hostnet.tap_name(one, 0xFFFFF, 9)
    assert longest.startswith("mqt") and len(longest) == 15
    with pytest.raises(HostError, match="longer than 15 characters"):
        hostnet.tap_name(one, 0x100000, 9)


def test_a_missing_bridge_is_refused_before_anything_is_made():
    with pytest.raises(HostError, match="bridge 'mqt-nosuch0' does not exist"):
        hostnet.open_tap("mqt-test0", "mqt-nosuch0")
    with pytest.raises(HostError, match="'lo' is not a bridge"):
        hostnet.open_tap("mqt-test0", "lo")
    assert not hostnet.interface_exists("mqt-test0")
    assert hostnet.remove_leftover_tap("mqt-test0") is False
