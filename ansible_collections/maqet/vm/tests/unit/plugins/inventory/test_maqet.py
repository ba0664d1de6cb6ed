"""The inventory plugin against a real state store in a temporary MAQET_HOME."""

from __future__ import annotations

import os
import shlex

import pytest

from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from ansible_collections.maqet.vm.plugins.inventory.maqet import group_name, ssh_forward


@pytest.fixture
def plugin():
    return inventory_loader.get("maqet.vm.maqet")


def test_verify_file_wants_our_suffix(plugin, tmp_path):
    for name, ok in (("a.maqet.yml", True), ("a.maqet.yaml", True), ("a.yml", False),
                     ("maqet.yml", False)):
        path = tmp_path / name
        path.write_text("plugin: maqet.vm.maqet\n")
        assert plugin.verify_file(str(path)) is ok, name


def test_group_names_and_ssh_forward():
    assert group_name("maqet_tag_role:web=1.x-y") == "maqet_tag_role_web_1_x_y"
    ports = [{"host": 8080, "guest": 80, "protocol": "tcp", "host_address": "127.0.0.1"},
             {"host": 2222, "guest": 22, "protocol": "udp", "host_address": "127.0.0.1"},
             {"host": 2223, "guest": 22, "protocol": "tcp", "host_address": "0.0.0.0"}]
    assert ssh_forward(ports, 22) == ("127.0.0.1", 2223)
    assert ssh_forward(ports, 0) is None and ssh_forward([], 22) is None


def define(home, **raw):
    from maqet_engine.engine import EngineContext, apply, load_definition

    ctx = EngineContext.for_home(str(home), check_mode=False)
    apply(ctx, spec=load_definition(ctx, definition=raw), state="present")


def test_parse_lists_groups_and_vars(plugin, tmp_path):
    home = tmp_path / "home"
    define(home, name="web1", memory="1G", tags=["web", "role:x"],
           network=[{"type": "user", "forward": [{"host": 2201, "guest": 22}]}])
    define(home, name="db1")
    config = tmp_path / "t.maqet.yml"
    config.write_text("plugin: maqet.vm.maqet\nmaqet_home: home\ninclude_stopped: true\n"
                      "compose:\n  mib: maqet_memory // 1048576 if maqet_memory else 0\n")
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(config), cache=False)
    assert set(inventory.hosts) == {"web1", "db1"}
    web = inventory.get_host("web1").get_vars()
    assert web["maqet_status"] == "defined" and web["ansible_port"] == 2201
    assert web["mib"] == 1024 and web["maqet_tags"] == ["role:x", "web"]
    assert set(inventory.groups["maqet_defined"].hosts) == {inventory.get_host("web1"),
                                                            inventory.get_host("db1")}
    assert [h.name for h in inventory.groups["maqet_tag_role_x"].hosts] == ["web1"]


def test_parse_lists_only_running_by_default(plugin, tmp_path):
    home = tmp_path / "home"
    define(home, name="idle1")
    config = tmp_path / "t.maqet.yml"
    config.write_text("plugin: maqet.vm.maqet\nmaqet_home: home\n")
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(config), cache=False)
    assert "idle1" not in inventory.hosts


def test_missing_home_is_an_empty_inventory_with_a_warning(plugin, tmp_path, mocker):
    config = tmp_path / "t.maqet.yml"
    config.write_text("plugin: maqet.vm.maqet\nmaqet_home: nothing-here\ninclude_stopped: true\n")
    inventory = InventoryData()
    warning = mocker.patch.object(plugin.display, "warning")
    plugin.parse(inventory, DataLoader(), str(config), cache=False)
    assert not inventory.hosts and not (tmp_path / "nothing-here").exists()
    message = warning.call_args.args[0]
    assert "maqet_home {0} does not exist".format(tmp_path / "nothing-here") in message


def test_missing_home_with_strict_is_an_error(plugin, tmp_path):
    from ansible.errors import AnsibleParserError

    config = tmp_path / "t.maqet.yml"
    config.write_text("plugin: maqet.vm.maqet\nmaqet_home: nothing-here\nstrict: true\n")
    with pytest.raises(AnsibleParserError, match="does not exist"):
        plugin.parse(InventoryData(), DataLoader(), str(config), cache=False)


def test_networks_per_vm(plugin, tmp_path):
    from maqet_engine.engine import EngineContext, apply_network, load_network

    home = tmp_path / "home"
    ctx = EngineContext.for_home(str(home), check_mode=False)
    apply_network(ctx, load_network(ctx, definition={"name": "lab", "type": "segment"}))
    define(home, name="web1", network=[{"type": "user"}, {"network": "lab"}])
    config = tmp_path / "t.maqet.yml"
    config.write_text("plugin: maqet.vm.maqet\nmaqet_home: home\ninclude_stopped: true\n")
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(config), cache=False)
    nics = inventory.get_host("web1").get_vars()["maqet_networks"]
    assert [(n["nic"], n["type"], n["network"], n["network_type"]) for n in nics] == [
        (0, "user", None, None), (1, "network", "lab", "segment")]
    assert nics[0]["mac"] is None and nics[1]["mac"].startswith("52:54:00:")


ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBWHlnhseLcB6KFFD4MBTA4"


def test_login_and_host_key_vars(plugin, tmp_path):
    """A VM maqet can reach: its user (ssh.user, else the first cloud_init user), its key
    file (~ expanded here, on the controller) and, once the guest printed its host keys
    (its runner wrote known_hosts), ssh options that check them strictly."""
    home = tmp_path / "home"
    forward = [{"type": "user", "forward": [{"host": 2201, "guest": 2200}]}]
    define(home, name="keyed", network=forward,
           ssh={"user": "admin", "private_key": "~/.ssh/id_test", "port": 2200})
    define(home, name="cloudy", network=[{"type": "user", "forward": [
        {"host": 2202, "guest": 22}]}], cloud_init={"users": [{"name": "ops"}]})
    define(home, name="auto", network=[{"type": "user", "forward": [
        {"host": "auto", "guest": 22}]}])
    known_hosts = home / "data" / "vms" / "keyed" / "known_hosts"  # as the runner writes it
    known_hosts.parent.mkdir(parents=True)
    known_hosts.write_text("[127.0.0.1]:2201 {0}\n".format(ED25519))
    config = tmp_path / "t.maqet.yml"
    config.write_text("plugin: maqet.vm.maqet\nmaqet_home: home\ninclude_stopped: true\n")
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(config), cache=False)
    keyed = inventory.get_host("keyed").get_vars()
    assert (keyed["ansible_host"], keyed["ansible_port"]) == ("127.0.0.1", 2201)
    assert keyed["ansible_user"] == "admin"
    assert keyed["ansible_ssh_private_key_file"] == os.path.expanduser("~/.ssh/id_test")
    assert shlex.split(keyed["ansible_ssh_common_args"]) == [
        "-o", "UserKnownHostsFile={0}".format(known_hosts), "-o", "StrictHostKeyChecking=yes"]
    assert keyed["maqet_known_hosts"] == str(known_hosts)
    assert keyed["maqet_ssh"]["host_keys"] == [ED25519]
    cloudy = inventory.get_host("cloudy").get_vars()
    assert cloudy["ansible_user"] == "ops" and cloudy["ansible_port"] == 2202
    assert "ansible_ssh_common_args" not in cloudy  # no keys yet: the user's known_hosts
    # An auto port has no number while its VM does not run: nothing to connect to.
    auto = inventory.get_host("auto").get_vars()
    assert "ansible_host" not in auto and auto["maqet_ports"][0]["auto"] is True


def test_agent_vars_and_guest_addresses():
    """Pure parts of agent_connection and agent_addresses."""
    from ansible_collections.maqet.vm.plugins.inventory.maqet import agent_vars, guest_addresses

    assert agent_vars({"name": "vm1", "spec": {}}) == {}
    assert agent_vars({"name": "vm1", "spec": {"agent": True}}, "/srv/maqet") == {
        "ansible_connection": "maqet.vm.agent", "ansible_maqet_vm": "vm1",
        "ansible_maqet_home": "/srv/maqet"}
    assert "ansible_maqet_home" not in agent_vars({"name": "vm1", "spec": {"agent": True}})
    interfaces = [
        {"name": "lo", "addresses": ["127.0.0.1/8", "::1/128"]},
        {"name": "eth0", "addresses": ["fe80::5054:ff:fe12:3456/64", "2001:db8::5/64",
                                       "192.0.2.10/24"]},
        {"name": "eth1", "addresses": ["169.254.1.1/16", "198.51.100.7/24", "bogus/1"]},
    ]
    assert guest_addresses(interfaces) == ["192.0.2.10/24", "198.51.100.7/24",
                                           "2001:db8::5/64"]
    assert guest_addresses(None) == [] and guest_addresses([{"name": "lo"}]) == []


def test_address_vars_check_the_key_under_the_vm_alias():
    """A guest reached at an address its agent reported: its SSH port, login and the
    VM's known_hosts under its host key alias (not under the address)."""
    from ansible_collections.maqet.vm.plugins.inventory.maqet import address_vars

    vm = {"name": "br1", "known_hosts": "/srv/maqet/data/vms/br1/known_hosts",
          "ssh": {"host_key_alias": "maqet-vm-br1"},
          "spec": {"ssh": {"user": "admin", "private_key": "/keys/id", "port": 2200}}}
    assert address_vars(vm, "192.0.2.10", 22) == {
        "ansible_host": "192.0.2.10", "ansible_port": 2200, "ansible_user": "admin",
        "ansible_ssh_private_key_file": "/keys/id",
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/srv/maqet/data/vms/br1/known_hosts"
                                   " -o StrictHostKeyChecking=yes -o HostKeyAlias=maqet-vm-br1"}
    # No keys printed yet (or an older runner's file without the alias): the user's own.
    bare = {"name": "br2", "known_hosts": None, "ssh": {}, "spec": {}}
    assert address_vars(bare, "2001:db8::5", 22) == {
        "ansible_host": "2001:db8::5", "ansible_port": 22}
    assert address_vars(vm, "192.0.2.10", 0) == {"ansible_host": "192.0.2.10"}


def test_agent_connection_for_vms_with_the_channel(plugin, tmp_path):
    home = tmp_path / "home"
    define(home, name="ga1", agent=True)
    define(home, name="plain1")
    config = tmp_path / "a.maqet.yml"
    config.write_text("plugin: maqet.vm.maqet\nmaqet_home: home\ninclude_stopped: true\n"
                      "agent_connection: true\n")
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(config), cache=False)
    ga1 = inventory.get_host("ga1").get_vars()
    assert ga1["ansible_connection"] == "maqet.vm.agent" and ga1["ansible_maqet_vm"] == "ga1"
    assert ga1["ansible_maqet_home"] == str(home)
    assert "ansible_connection" not in inventory.get_host("plain1").get_vars()
