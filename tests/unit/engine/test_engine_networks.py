"""Named networks through the engine's facade, without QEMU: four-way idempotence of
apply_network, define-time rules across VMs (missing network, MAC, link ends), removal
refused while VMs use a network, and the host side a view resolves."""

from __future__ import annotations

from pathlib import Path

import pytest

from maqet_engine import engine
from maqet_engine.errors import (
    AlreadyExists,
    ConfigError,
    NetworkInUse,
    NetworkNotFound,
    StateConflict,
    UsageError,
)


@pytest.fixture
def ctx(tmp_path: Path) -> engine.EngineContext:
    return engine.EngineContext.for_home(str(tmp_path / "home"))


def net(ctx: engine.EngineContext, **definition):
    return engine.load_network(ctx, definition=definition)


def vm(ctx: engine.EngineContext, name: str, *nics):
    return engine.load_definition(ctx, definition={"name": name, "accel": "tcg",
                                                   "network": list(nics)})


def test_apply_network_four_ways_and_absent_four_ways(ctx):
    lab = net(ctx, name="lab", type="segment")
    check = engine.apply_network(ctx.with_check_mode(True), lab)
    assert check.changed and [a["action"] for a in check.actions] == ["define_network"]
    assert not ctx.paths.db.exists()  # check mode wrote nothing
    first = engine.apply_network(ctx, lab)
    assert first.changed and first.before is None and first.after == {"spec": lab.data}
    assert first.data["summary"] == f"{lab.data['group']}:{lab.data['port']} on lo (ttl 1)"
    again = engine.apply_network(ctx, net(ctx, name="lab", type="segment", ttl="1"))
    assert not again.changed and again.actions == []
    assert not engine.apply_network(ctx.with_check_mode(True), lab).changed
    # A change: before/after for --diff; no VM runs on it, so no restart is needed.
    ttl2 = net(ctx, name="lab", type="segment", ttl=2)
    changed = engine.apply_network(ctx, ttl2)
    assert [a["action"] for a in changed.actions] == ["redefine_network"]
    assert (changed.before["spec"]["ttl"], changed.after["spec"]["ttl"]) == (1, 2)
    assert not changed.restart_required
    gone = [engine.apply_network(c, name="lab", state="absent")
            for c in (ctx.with_check_mode(True), ctx, ctx, ctx.with_check_mode(True))]
    assert [g.changed for g in gone] == [True, True, False, False]
    assert [a["action"] for a in gone[0].actions] == ["remove_network"]
    assert engine.list_networks(ctx).data == []


def test_define_network_refuses_another_definition(ctx):
    engine.define_network(ctx, net(ctx, name="lab", type="segment"))
    assert not engine.define_network(ctx, net(ctx, name="lab", type="segment")).changed
    with pytest.raises(AlreadyExists, match="apply the definition to change it"):
        engine.define_network(ctx, net(ctx, name="lab", type="segment", interface="eth9"))


def test_two_networks_cannot_share_a_group_and_port(ctx):
    lab = engine.apply_network(ctx, net(ctx, name="lab", type="segment")).data["spec"]
    clash = net(ctx, name="lab2", type="segment", group=lab["group"], port=lab["port"])
    for c in (ctx.with_check_mode(True), ctx):
        with pytest.raises(StateConflict, match="which network 'lab' uses already"):
            engine.apply_network(c, clash)
    engine.apply_network(ctx, net(ctx, name="lab2", type="segment", group=lab["group"],
                                  port=lab["port"] + 1))


def test_vm_nics_must_name_existing_networks_and_fit_them(ctx):
    with pytest.raises(NetworkNotFound, match="network\\[0\\] of VM 'a' names it"):
        engine.define(ctx, vm(ctx, "a", {"network": "lab"}))
    # Check mode assumes an earlier task creates the network.
    assert engine.define(ctx.with_check_mode(True), vm(ctx, "a", {"network": "lab"})).changed
    engine.apply_network(ctx, net(ctx, name="lab", type="segment"))
    engine.apply_network(ctx, net(ctx, name="wire", type="link"))
    with pytest.raises(StateConflict, match="network 'wire' is a link: say which end"):
        engine.define(ctx, vm(ctx, "a", {"network": "wire"}))
    with pytest.raises(StateConflict, match="'lab' is a segment, which has no ends"):
        engine.define(ctx, vm(ctx, "a", {"network": "lab", "end": "a"}))
    engine.define(ctx, vm(ctx, "a", {"type": "user"}, {"network": "lab"},
                          {"network": "wire", "end": "a"}))
    with pytest.raises(StateConflict, match="end a of link 'wire' is taken by VM 'a'"):
        engine.define(ctx, vm(ctx, "b", {"network": "wire", "end": "a"}))
    mac = engine.show(ctx, "a").data["networks"][1]["mac"]
    with pytest.raises(StateConflict, match=f"MAC address {mac} is already used on network "
                       "'lab' by VM 'a' \\(network\\[1\\]\\)"):
        engine.define(ctx, vm(ctx, "b", {"network": "lab", "mac": mac}))
    # The same MAC on another network (or on user networking) is fine.
    engine.apply_network(ctx, net(ctx, name="lab2", type="segment"))
    engine.define(ctx, vm(ctx, "b", {"network": "lab2", "mac": mac},
                          {"network": "wire", "end": "b"}))
    # Redefining a VM with its own MAC is not a clash with itself.
    engine.apply(ctx, spec=vm(ctx, "a", {"type": "user"}, {"network": "lab"},
                              {"network": "wire", "end": "a"}, {"network": "lab2"}))
    views = {v["name"]: v for v in engine.list_networks(ctx).data}
    assert [(u["vm"], u["nic"], u["end"]) for u in views["wire"]["vms"]] == [
        ("a", 2, "a"), ("b", 1, "b")]
    assert [u["mac"] for u in views["lab"]["vms"]] == [mac]


def test_removing_a_network_in_use_names_the_vms(ctx):
    engine.apply_network(ctx, net(ctx, name="lab", type="segment"))
    engine.define(ctx, vm(ctx, "web", {"network": "lab"}))
    engine.define(ctx, vm(ctx, "db", {"network": "lab"}, {"network": "lab"}))
    for c in (ctx.with_check_mode(True), ctx):
        with pytest.raises(NetworkInUse) as err:
            engine.remove_network(c, "lab")
        assert err.value.vms == ["db", "web"] and err.value.exit_code == 4
        assert str(err.value).startswith("network 'lab' is used by VM(s) db, web;")
    engine.remove(ctx, "web")
    engine.remove(ctx, "db")
    assert engine.remove_network(ctx, "lab").changed
    with pytest.raises(NetworkNotFound):
        engine.remove_network(ctx, "lab")
    assert not engine.remove_network(ctx, "lab", missing_ok=True).changed


def test_changing_a_network_must_keep_its_vms_valid(ctx):
    engine.apply_network(ctx, net(ctx, name="n", type="segment"))
    engine.define(ctx, vm(ctx, "a", {"network": "n"}))
    with pytest.raises(StateConflict, match="VM 'a'.*network 'n' is a link"):
        engine.apply_network(ctx, net(ctx, name="n", type="link"))


def test_views_and_argv(ctx):
    lab = engine.apply_network(ctx, net(ctx, name="lab", type="segment")).data["spec"]
    wire = engine.apply_network(ctx, net(ctx, name="wire", type="link")).data["spec"]
    engine.apply_network(ctx, net(ctx, name="br", type="bridged", bridge="br0"))
    engine.apply_network(ctx, net(ctx, name="far", type="segment", interface="nosuch0"))
    spec = vm(ctx, "a", {"type": "user"}, {"network": "lab"}, {"network": "wire", "end": "b"},
              {"network": "br"}, {"network": "far"})
    view = engine.apply(ctx, spec=spec).vm
    assert [(n["nic"], n["type"], n["network"], n["network_type"], n["end"])
            for n in view["networks"]] == [
        (0, "user", None, None, None), (1, "network", "lab", "segment", None),
        (2, "network", "wire", "link", "b"), (3, "network", "br", "bridged", None),
        (4, "network", "far", "segment", None)]
    assert view["networks"][3]["tap"].startswith("mqt") and len(view["networks"][3]["tap"]) <= 15
    argv = view["argv"]
    assert (f"dgram,id=net1,remote.type=inet,remote.host={lab['group']},remote.port="
            f"{lab['port']},local.type=inet,local.host=127.0.0.1,local.port=0") in argv
    local_host, local_port = wire["b"].split(":")
    remote_host, remote_port = wire["a"].split(":")
    assert (f"dgram,id=net2,local.type=inet,local.host={local_host},local.port={local_port},"
            f"remote.type=inet,remote.host={remote_host},remote.port={remote_port}") in argv
    assert "tap,id=net3,fd=NIC3_FD" in argv  # a view opens no tap device
    assert any("local.host=ADDRESS-OF-nosuch0" in a for a in argv)  # nor fails on a host
    assert view["restart_required"] is False and view["networks_changed"] == []


def test_bad_calls(ctx):
    with pytest.raises(UsageError, match="unknown network state"):
        engine.apply_network(ctx, name="x", state="running")
    with pytest.raises(UsageError, match="needs its definition"):
        engine.apply_network(ctx, name="x")
    with pytest.raises(ConfigError, match="type: is required"):
        engine.load_network(ctx, definition={"name": "x"})
    with pytest.raises(NetworkNotFound):
        engine.show_network(ctx, "x")
