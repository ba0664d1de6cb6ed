"""A private layer-2 segment for tests of ``bridged`` networks (root only), shared by the
integration tests and the Ansible end-to-end tests (the ``lab_bridge`` fixture in
tests/conftest.py).

The test owns everything it touches: a bridge in the root namespace with no address (so
nothing is routed anywhere from it), and a network namespace plugged into it by a veth,
holding an address in a /24 that nothing on this machine uses (``peer``). A guest on the
bridge gets an address of that /24 (:meth:`LabBridge.guest_address`); the namespace is
the only place that reaches it, so whatever talks to the guest runs there
(``ip netns exec NETNS ...``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from netns import collisions, netns_pids  # tests/support/netns.py
from procs import kill_pids

SUBNETS = [ipaddress.ip_network(f"10.251.{i}.0/24") for i in range(64)]


def ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)


@dataclass
class LabBridge:
    bridge: str
    netns: str
    peer: str  # the address in the namespace
    prefix: int

    def guest_address(self, index: int = 1) -> str:
        """Address (CIDR) number ``index`` after the namespace's, for a guest."""
        return f"{ipaddress.ip_address(self.peer) + index}/{self.prefix}"


@contextlib.contextmanager
def lab_bridge() -> Iterator[LabBridge]:
    """Create the bridge, the namespace and the veth; remove them (by the names made
    here) on exit, whatever happened."""
    if os.geteuid() != 0:
        raise PermissionError("bridged networks need root (tap devices, a bridge, a "
                              "namespace)")
    suffix = secrets.token_hex(2)
    bridge, netns, veth = f"mqtb{suffix}", f"mqtn{suffix}", f"mqtv{suffix}"
    subnet = next((s for s in SUBNETS if not collisions(s)), None)
    assert subnet is not None, "no free /24 in 10.251.0.0/16 here"
    peer = str(subnet.network_address + 2)
    try:
        ip("link", "add", bridge, "type", "bridge")
        Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").write_text("1\n")
        ip("link", "set", bridge, "up")
        ip("netns", "add", netns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "net0", "netns", netns)
        ip("link", "set", veth, "master", bridge, "up")
        ip("netns", "exec", netns, "sh", "-c",
           f"ip addr add {peer}/24 dev net0 && ip link set net0 up && ip link set lo up")
        yield LabBridge(bridge, netns, peer, 24)
    finally:
        # Whatever a test left running in the namespace (e.g. an ssh ControlPersist
        # master) would keep it alive after "ip netns del": stopped by PID first.
        kill_pids(netns_pids(netns))
        ip("netns", "del", netns, check=False)
        ip("link", "del", veth, check=False)
        ip("link", "del", bridge, check=False)
