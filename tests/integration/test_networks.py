"""Named networks with real QEMU and real guests: VMs on a loopback segment reach each
other and nobody else, nothing of it leaves through eth0, a segment's TTL is what its
definition says, a point-to-point link carries traffic, and a changed network marks the
VMs running on it restart_required.

Addresses inside the guests are the test's own (10.250.0.0/16); they exist only in the
guests. Network names carry a random suffix: a segment is its group and port, derived
from the name, and another run on this machine must not share one.
"""

from __future__ import annotations

import secrets
from typing import Any

import guest
import pytest
from guestnet import GuestShell, Sniffer

from maqet_engine import engine

pytestmark = pytest.mark.qemu


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def start_vm(vms: Any, name: str, *nics: dict[str, Any]) -> GuestShell:
    """Define and start a guest with ``nics`` through the facade; its shell, booted."""
    ctx = vms.ctx()
    spec = engine.load_definition(ctx, definition=guest.guest_definition(
        name, vms.guest, network=list(nics)))
    engine.apply(ctx, spec=spec, state="running")
    vms.names.append(name)
    shell = GuestShell(ctx, name)
    return shell


def mac_of(vms: Any, name: str, nic: int) -> str:
    return engine.show(vms.ctx(), name).data["networks"][nic]["mac"]


def test_segment_connects_its_vms_and_nothing_else(vms):
    """a and b share segment 'lab' (ttl 1), c is alone on 'other' (ttl 3). a and b ping
    each other; c reaches neither. The segments' packets go over lo with their TTLs and
    none leaves through eth0."""
    ctx = vms.ctx()
    lab = engine.apply_network(ctx, engine.load_network(ctx, definition={
        "name": unique("lab"), "type": "segment"})).data["spec"]
    other = engine.apply_network(ctx, engine.load_network(ctx, definition={
        "name": unique("other"), "type": "segment", "ttl": 3})).data["spec"]
    with Sniffer("lo", lab["group"], lab["port"]) as lab_lo, \
            Sniffer("lo", other["group"], other["port"]) as other_lo, \
            Sniffer("eth0", lab["group"]) as lab_eth0, \
            Sniffer("eth0", other["group"]) as other_eth0:
        shells = {name: start_vm(vms, name, {"network": net["name"]})
                  for name, net in (("a", lab), ("b", lab), ("c", other))}
        for index, shell in enumerate(shells.values(), start=1):
            shell.wait_ready()
            shell.configure(f"10.250.0.{index}/24")
        assert shells["a"].ping("10.250.0.2"), "a cannot reach b on their segment"
        assert shells["b"].ping("10.250.0.1"), "b cannot reach a on their segment"
        assert not shells["c"].ping("10.250.0.1", count=2, wait=2), "c reached a"
        assert not shells["c"].ping("10.250.0.2", count=2, wait=2), "c reached b"
    assert lab_lo.capture.packets > 0 and lab_lo.capture.ttls == {1}
    assert other_lo.capture.packets > 0 and other_lo.capture.ttls == {3}
    assert (lab_eth0.capture.packets, lab_eth0.capture.igmp) == (0, 0)
    assert (other_eth0.capture.packets, other_eth0.capture.igmp) == (0, 0)
    # The VMs are listed on their networks, with their MACs.
    views = {v["name"]: v for v in engine.list_networks(ctx).data}
    assert [(u["vm"], u["status"]) for u in views[lab["name"]]["vms"]] == [
        ("a", "running"), ("b", "running")]
    assert views[lab["name"]]["vms"][0]["mac"] == mac_of(vms, "a", 0)


def test_link_between_two_vms(vms):
    """A point-to-point link; the guests find their NIC by the MAC maqet derived."""
    ctx = vms.ctx()
    wire = engine.apply_network(ctx, engine.load_network(ctx, definition={
        "name": unique("wire"), "type": "link"})).data["spec"]
    a = start_vm(vms, "a", {"type": "user"}, {"network": wire["name"], "end": "a"})
    b = start_vm(vms, "b", {"type": "user"}, {"network": wire["name"], "end": "b"})
    a.wait_ready()
    b.wait_ready()
    a.configure("10.250.1.1/30", mac=mac_of(vms, "a", 1))
    b.configure("10.250.1.2/30", mac=mac_of(vms, "b", 1))
    assert a.ping("10.250.1.2") and b.ping("10.250.1.1")
    # Either end restarts on its own: the link is datagrams, no connection to lose.
    engine.apply(ctx, name="b", state="restarted", force=True)
    b = GuestShell(ctx, "b")
    b.wait_ready()
    b.configure("10.250.1.2/30", mac=mac_of(vms, "b", 1))
    assert b.ping("10.250.1.1")


def test_changed_network_requires_a_restart_of_its_running_vms(vms):
    ctx = vms.ctx()
    name = unique("lab")
    engine.apply_network(ctx, engine.load_network(ctx, definition={"name": name,
                                                                   "type": "segment"}))
    start_vm(vms, "a", {"network": name})
    assert engine.show(ctx, "a").data["restart_required"] is False
    changed = engine.apply_network(ctx, engine.load_network(
        ctx, definition={"name": name, "type": "segment", "ttl": 2}))
    assert changed.restart_required
    assert [(u["vm"], u["restart_required"]) for u in changed.data["vms"]] == [("a", True)]
    view = engine.show(ctx, "a").data
    assert view["restart_required"] and view["networks_changed"] == [name]
    # apply without recreate says so; with recreate it restarts onto the new definition.
    assert engine.apply(ctx, name="a", state="running").restart_required
    result = engine.apply(ctx, name="a", state="running", recreate=True, force=True)
    assert [a["action"] for a in result.actions] == ["stop", "start"]
    assert not result.restart_required and not engine.show(ctx, "a").data["restart_required"]
