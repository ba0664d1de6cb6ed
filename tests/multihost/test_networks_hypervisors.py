"""Networks across two hypervisors: each host (a network namespace with its own maqet
home, tests/support/netns.py) defines the same segment on its interface into the
harness's bridge, and the same point-to-point link between the two hosts' addresses,
and starts a VM on both with the real ``maqet`` CLI inside its namespace (so QEMU's
sockets live there). The guests ping each other across hosts over each; the segment's
multicast is on the harness's bridge with TTL 1, nothing of it on eth0, and no
namespace routes multicast (``ip mroute`` empty, mc_forwarding off).

The guests' addresses (10.250.9.0/24, 10.250.10.0/30) exist only inside the guests.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import guest
import pytest
import yaml
from guestnet import GuestShell, Sniffer
from netns import Hypervisors

from maqet_engine import engine

pytestmark = [pytest.mark.multihost, pytest.mark.qemu]

REPO = Path(__file__).resolve().parents[2]


def maqet(host, *args: str) -> subprocess.CompletedProcess[str]:
    """The maqet CLI inside ``host``'s namespace, on its maqet home."""
    return host.run([sys.executable, "-m", "maqet_engine", *args],
                    env={"MAQET_HOME": str(host.maqet_home), "PYTHONPATH": str(REPO)})


def no_multicast_routing(run) -> None:
    """Nothing forwards multicast in a namespace: no multicast routes, forwarding off."""
    assert run(["ip", "mroute", "show"]).stdout.strip() == ""
    assert run(["cat", "/proc/sys/net/ipv4/conf/all/mc_forwarding"]).stdout.strip() == "0"


def test_segment_across_two_hypervisors(hypervisors: Hypervisors):
    files = guest.ensure_guest()
    network, wire = f"lab-{secrets.token_hex(3)}", f"wire-{secrets.token_hex(3)}"
    hv1, hv2 = hypervisors["hv1"], hypervisors["hv2"]
    shells = {}
    for index, host in enumerate(hypervisors, start=1):
        maqet(host, "network", "add", network, "--type", "segment", "--interface", "net0")
        maqet(host, "network", "add", wire, "--type", "link", "--end-a", hv1.address,
              "--end-b", hv2.address)
        definition = host.dir / "vm.yml"
        definition.write_text(yaml.safe_dump(guest.guest_definition(
            f"vm{index}", files, network=[{"network": network},
                                          {"network": wire, "end": "ab"[index - 1]}])))
        maqet(host, "apply", "-d", str(definition), "--state", "running")
        shells[host.name] = GuestShell(engine.EngineContext.for_home(str(host.maqet_home)),
                                       f"vm{index}")
    specs = [engine.show_network(shell.ctx, network).data["spec"] for shell in shells.values()]
    assert specs[0] == specs[1], "the same name must be the same segment on both hosts"
    group, port = specs[0]["group"], specs[0]["port"]

    with Sniffer(hypervisors.bridge, group, port) as on_bridge, \
            Sniffer("eth0", group) as on_eth0:
        for index, shell in enumerate(shells.values(), start=1):
            shell.wait_ready()
            nics = engine.show(shell.ctx, shell.name).data["networks"]
            shell.configure(f"10.250.9.{index}/24", mac=nics[0]["mac"])
            shell.configure(f"10.250.10.{index}/30", mac=nics[1]["mac"])
        assert shells["hv1"].ping("10.250.9.2"), "vm1 (hv1) cannot reach vm2 (hv2)"
        assert shells["hv2"].ping("10.250.9.1"), "vm2 (hv2) cannot reach vm1 (hv1)"
        assert shells["hv1"].ping("10.250.10.2"), "the link hv1 -> hv2 does not work"
        assert shells["hv2"].ping("10.250.10.1"), "the link hv2 -> hv1 does not work"
    assert on_bridge.capture.packets > 0 and on_bridge.capture.ttls == {1}
    assert (on_eth0.capture.packets, on_eth0.capture.igmp) == (0, 0)

    # Nothing could carry it further: eth0 is no port of the harness's bridge, and no
    # namespace (root included) routes multicast.
    assert not Path("/sys/class/net/eth0/master").exists()
    no_multicast_routing(lambda argv: subprocess.run(argv, capture_output=True, text=True,
                                                     check=True))
    for host in hypervisors:
        no_multicast_routing(host.run)
    for shell in shells.values():
        engine.stop(shell.ctx, shell.name, force=True)
