"""The inventory plugin's hypervisors mode with a stand-in ``ssh`` (a script that answers
as each hypervisor would): options, parallel listing, failures, names, connection vars.
The real thing over SSH to network namespaces is tests/multihost/test_multihost_inventory.py
of the repository."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import sys
import tempfile
import time

import pytest

from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from ansible_collections.maqet.vm.plugins.inventory.maqet import (
    connection_vars, hypervisor_config, multiplex_options, proxy_command, remote_command,
    ssh_argv)

FAKE_SSH = r'''#!{python}
"""Stand-in for ssh: answers from answers.json by destination (the second-to-last
argument), logs its argv, and sleeps when told to."""
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "calls.log"), "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
answer = json.load(open(os.path.join(here, "answers.json")))[sys.argv[-2]]
time.sleep(answer.get("sleep", 0))
sys.stdout.write(answer.get("stdout", ""))
sys.stderr.write(answer.get("stderr", ""))
sys.exit(answer.get("rc", 0))
'''


def view(name, status="running", ports=(), tags=()):
    """A VM as ``maqet ls --json`` prints it (the keys the plugin reads)."""
    return {"name": name, "id": 1, "status": status, "runner_pid": None, "qemu_pid": None,
            "accel": None, "tags": list(tags), "spec_hash": "h", "restart_required": False,
            "ports": list(ports), "spec": {"name": name, "memory": 268435456}}


@pytest.fixture
def plugin():
    return inventory_loader.get("maqet.vm.maqet")


@pytest.fixture
def fake_ssh(tmp_path):
    """Write answers ({destination: {stdout, stderr, rc, sleep}}); returns the script."""
    script = tmp_path / "ssh"
    script.write_text(FAKE_SSH.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def answer(answers):
        (tmp_path / "answers.json").write_text(json.dumps({
            host: dict(a, stdout=json.dumps(a["vms"])) if "vms" in a else a
            for host, a in answers.items()}))
        return script

    return answer


def calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()]


def parse(plugin, tmp_path, config, cache=False):
    path = tmp_path / "fleet.maqet.yml"
    path.write_text(config)
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(path), cache=cache)
    return inventory


def config(script, *lines, share=False):
    """A plugin config with the stand-in ssh; connection sharing off unless ``share``
    (it would create ~/.ansible/cp)."""
    return "\n".join(["plugin: maqet.vm.maqet", "include_stopped: true",
                      "ssh_executable: {0}".format(script),
                      *([] if share else ["ssh_control_persist: 0"]), *lines]) + "\n"


def test_lists_every_hypervisor_with_groups_and_vars(plugin, tmp_path, fake_ssh):
    script = fake_ssh({
        "10.0.0.1": {"vms": [view("web1", tags=["web"]), view("db1", status="defined")]},
        "10.0.0.2": {"vms": [view("web2", tags=["web"])]},
    })
    inventory = parse(plugin, tmp_path, config(
        script,
        "hypervisor_defaults: {user: root, maqet_home: /srv/maqet, private_key_file: /k/id}",
        "hypervisors:",
        "  - {name: hv1, host: 10.0.0.1}",
        "  - {name: hv2, host: 10.0.0.2, port: 2222, python: /usr/bin/python3}"))
    assert set(inventory.hosts) == {"web1", "db1", "web2"}
    assert {h.name for h in inventory.groups["maqet_hypervisor_hv1"].hosts} == {"web1", "db1"}
    assert {h.name for h in inventory.groups["maqet_hypervisor_hv2"].hosts} == {"web2"}
    assert {h.name for h in inventory.groups["maqet_tag_web"].hosts} == {"web1", "web2"}
    assert {h.name for h in inventory.groups["maqet_defined"].hosts} == {"db1"}
    web2 = inventory.get_host("web2").get_vars()
    assert web2["maqet_hypervisor"] == "hv2" and web2["maqet_name"] == "web2"
    assert web2["maqet_memory"] == 268435456
    argv = {a[-2]: a for a in calls(tmp_path)}
    assert argv["10.0.0.2"][-1] == ("MAQET_HOME=/srv/maqet /usr/bin/python3 -m maqet_engine "
                                    "--json ls")
    assert argv["10.0.0.1"][-1] == ("MAQET_HOME=/srv/maqet /opt/maqet/venv/bin/python -m "
                                    "maqet_engine --json ls")
    options = argv["10.0.0.2"]
    assert options[:4] == ["-o", "ConnectTimeout=30", "-o", "BatchMode=yes"]
    assert "StrictHostKeyChecking=yes" in options and options[
        options.index("-p"):options.index("-p") + 2] == ["-p", "2222"]
    assert options[options.index("-l"):options.index("-l") + 2] == ["-l", "root"]


def test_hypervisors_are_asked_at_the_same_time(plugin, tmp_path, fake_ssh):
    script = fake_ssh({"h{0}".format(i): {"vms": [view("vm{0}".format(i))], "sleep": 1.0}
                       for i in range(4)})
    started = time.monotonic()
    inventory = parse(plugin, tmp_path, config(
        script, "hypervisors:", *("  - {{host: h{0}}}".format(i) for i in range(4))))
    assert time.monotonic() - started < 2.5  # four 1 s answers, not 4 s in a row
    assert set(inventory.hosts) == {"vm0", "vm1", "vm2", "vm3"}


def test_a_host_that_is_down_is_a_warning_naming_it(plugin, tmp_path, fake_ssh, mocker):
    script = fake_ssh({
        "up": {"vms": [view("a")]},
        "down": {"rc": 255, "stderr": "ssh: connect to host down port 22: Connection refused\n"},
    })
    warning = mocker.patch.object(plugin.display, "warning")
    inventory = parse(plugin, tmp_path, config(
        script, "hypervisors: [{name: hv1, host: up}, {name: hv2, host: down}]"))
    assert set(inventory.hosts) == {"a"}
    message = warning.call_args.args[0]
    assert "hypervisor hv2 (down) is unreachable over SSH" in message
    assert "Connection refused" in message and "its VMs are not listed" in message
    with pytest.raises(AnsibleParserError, match="hypervisor hv2 .down. is unreachable"):
        parse(plugin, tmp_path, config(
            script, "strict: true",
            "hypervisors: [{name: hv1, host: up}, {name: hv2, host: down}]"))


def test_a_slow_host_times_out(plugin, tmp_path, fake_ssh, mocker):
    script = fake_ssh({"slow": {"vms": [], "sleep": 5}, "fast": {"vms": [view("b")]}})
    warning = mocker.patch.object(plugin.display, "warning")
    started = time.monotonic()
    inventory = parse(plugin, tmp_path, config(
        script, "ssh_timeout: 1", "hypervisors: [{host: slow}, {host: fast}]"))
    assert time.monotonic() - started < 4
    assert set(inventory.hosts) == {"b"}
    assert "hypervisor slow (slow) did not answer within 1 s" in warning.call_args.args[0]


def test_maqet_errors_and_a_missing_engine_say_so(plugin, tmp_path, fake_ssh, mocker):
    error = {"error": {"type": "HostError", "message": "state store damaged", "exit_code": 6}}
    script = fake_ssh({
        "broken": {"rc": 6, "stdout": json.dumps(error)},
        "bare": {"rc": 1, "stderr": "/usr/bin/python3: No module named maqet_engine\n"},
    })
    warning = mocker.patch.object(plugin.display, "warning")
    parse(plugin, tmp_path, config(script, "hypervisors: [{host: broken}, {host: bare}]"))
    messages = [c.args[0] for c in warning.call_args_list]
    assert any("hypervisor broken (broken): maqet failed: state store damaged" in m
               for m in messages), messages
    assert any("the maqet engine was not found there" in m for m in messages), messages


def test_same_name_on_two_hypervisors(plugin, tmp_path, fake_ssh, mocker):
    script = fake_ssh({"a": {"vms": [view("web")]}, "b": {"vms": [view("web"), view("x")]}})
    warning = mocker.patch.object(plugin.display, "warning")
    inventory = parse(plugin, tmp_path, config(
        script, "hypervisors: [{name: hv1, host: a}, {name: hv2, host: b}]"))
    assert set(inventory.hosts) == {"web", "x"}
    assert inventory.get_host("web").get_vars()["maqet_hypervisor"] == "hv1"
    message = warning.call_args.args[0]
    assert "hypervisors hv1 and hv2 both have a VM named web" in message
    assert "name_template" in message
    with pytest.raises(AnsibleParserError, match="both have a VM named web"):
        parse(plugin, tmp_path, config(
            script, "strict: true", "hypervisors: [{name: hv1, host: a}, {name: hv2, host: b}]"))
    # With a name template both are listed, under their new names.
    inventory = parse(plugin, tmp_path, config(
        script, "name_template: '{{ hypervisor }}-{{ name }}'",
        "hypervisors: [{name: hv1, host: a}, {name: hv2, host: b}]"))
    assert set(inventory.hosts) == {"hv1-web", "hv2-web", "hv2-x"}
    assert inventory.get_host("hv2-web").get_vars()["maqet_name"] == "web"


def test_connection_vars_of_remote_guests(plugin, tmp_path, fake_ssh):
    loopback = [{"host": 2222, "guest": 22, "protocol": "tcp", "host_address": "127.0.0.1"}]
    everywhere = [{"host": 2223, "guest": 22, "protocol": "tcp", "host_address": "0.0.0.0"}]
    address = [{"host": 2224, "guest": 22, "protocol": "tcp", "host_address": "10.0.0.1"}]
    script = fake_ssh({"10.0.0.1": {"vms": [view("lo", ports=loopback),
                                            view("any", ports=everywhere),
                                            view("addr", ports=address), view("none")]}})
    inventory = parse(plugin, tmp_path, config(
        script, "hypervisors:",
        "  - {name: hv1, host: 10.0.0.1, user: root, private_key_file: /keys/my key,",
        "     known_hosts_file: /kh, ssh_common_args: '-o Ciphers=aes256-ctr'}"))
    lo = inventory.get_host("lo").get_vars()
    # The hypervisor's address: Ansible's ControlPersist socket is per address and port.
    assert (lo["ansible_host"], lo["ansible_port"]) == ("10.0.0.1", 2222)
    args = shlex.split(lo["ansible_ssh_common_args"])
    assert args[0] == "-o" and args[1].startswith("ProxyCommand=")
    proxy = shlex.split(args[1][len("ProxyCommand="):])
    assert proxy[0] == str(script)
    assert proxy[-3:] == ["-W", "127.0.0.1:2222", "10.0.0.1"]
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/kh",
                   "IdentitiesOnly=yes", "Ciphers=aes256-ctr"):
        assert option in proxy, (option, proxy)
    assert proxy[proxy.index("-i") + 1] == "/keys/my key"
    assert args[2:] == ["-o", "HostKeyAlias=[10.0.0.1]:2222"]
    anywhere = inventory.get_host("any").get_vars()
    assert (anywhere["ansible_host"], anywhere["ansible_port"]) == ("10.0.0.1", 2223)
    assert "ansible_ssh_common_args" not in anywhere
    addr = inventory.get_host("addr").get_vars()
    assert (addr["ansible_host"], addr["ansible_port"]) == ("10.0.0.1", 2224)
    assert "ansible_host" not in inventory.get_host("none").get_vars()


def test_local_connection_vars_are_unchanged():
    ports = [{"host": 2222, "guest": 22, "protocol": "tcp", "host_address": "0.0.0.0"}]
    assert connection_vars({"ports": ports}, 22) == {"ansible_host": "127.0.0.1",
                                                     "ansible_port": 2222}
    assert connection_vars({"ports": ports}, 0) == {}


def test_proxy_command_quotes_for_the_shell_and_escapes_percent():
    hv = hypervisor_config({"host": "hv", "private_key_file": "/k/100% key"})
    command = proxy_command(hv, "127.0.0.1", 2222)
    assert "'/k/100%% key'" in command and command.endswith(" -W 127.0.0.1:2222 hv")


def test_remote_command_and_argv():
    hv = hypervisor_config({"host": "h", "maqet_command": "sudo -u vm maqet",
                            "maqet_home": "/srv/my home"})
    assert remote_command(hv) == "MAQET_HOME='/srv/my home' sudo -u vm maqet --json ls"
    argv = ssh_argv(hv, "ssh", 7)
    assert argv[:3] == ["ssh", "-o", "ConnectTimeout=7"] and argv[-2] == "h"


@pytest.mark.parametrize("entry, defaults, match", [
    ({"host": "h", "strict_host_key_checking": "no"}, {}, "cannot be turned off"),
    ({"host": "h", "colour": "red"}, {}, "unknown key.*colour"),
    ({"name": "x"}, {}, "without host"),
    ({"host": "h"}, {"host": "g"}, "host cannot be in hypervisor_defaults"),
    ({"host": "h", "port": "ssh"}, {}, "port 'ssh' is not a number"),
    ("h", {}, "is a mapping"),
])
def test_bad_hypervisor_entries(entry, defaults, match):
    with pytest.raises(AnsibleParserError, match=match):
        hypervisor_config(entry, defaults)


def test_duplicate_hypervisor_names_are_refused(plugin, tmp_path, fake_ssh):
    script = fake_ssh({})
    with pytest.raises(AnsibleParserError, match="hypervisor name.s. hv given twice"):
        parse(plugin, tmp_path, config(script, "hypervisors: [{name: hv, host: a}, "
                                               "{name: hv, host: b}]"))


def test_cache_skips_ssh(plugin, tmp_path, fake_ssh):
    script = fake_ssh({"a": {"vms": [view("one")]},
                       "b": {"rc": 255, "stderr": "Connection refused"}})
    cache_dir = tmp_path / "cache"
    text = config(script, "cache: true", "cache_plugin: ansible.builtin.jsonfile",
                  "cache_connection: {0}".format(cache_dir),
                  "hypervisors: [{host: a}]")
    parse(plugin, tmp_path, text, cache=False)  # refresh: writes the cache
    plugin._cache.update_cache_if_changed()
    before = len(calls(tmp_path))
    inventory = parse(plugin, tmp_path, text, cache=True)
    assert set(inventory.hosts) == {"one"} and len(calls(tmp_path)) == before


def test_connections_are_shared_unless_told_not_to(plugin, tmp_path, fake_ssh):
    script = fake_ssh({"a": {"vms": []}})
    short = tempfile.mkdtemp(prefix="cp", dir="/tmp")  # pytest's tmp_path is too long
    try:
        parse(plugin, tmp_path, config(script, "hypervisors: [{host: a, user: root}]",
                                       "ssh_control_path_dir: {0}/cp".format(short),
                                       share=True))
        argv = calls(tmp_path)[-1]
        assert "ControlMaster=auto" in argv and "ControlPersist=60s" in argv, argv
        path = next(a for a in argv if a.startswith("ControlPath="))[len("ControlPath="):]
        assert path.startswith(short + "/cp/maqet-")
        assert os.stat(short + "/cp").st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(short)
    parse(plugin, tmp_path, config(script, "hypervisors: [{host: a, user: root}]"))
    assert not any("Control" in a for a in calls(tmp_path)[-1])


def test_no_sharing_when_the_socket_path_is_too_long():
    hv = hypervisor_config({"host": "h"})
    assert multiplex_options(hv, 60, "/" + "d" * 100) == []
    short = multiplex_options(hv, 60, "/cp")
    assert short[-1].startswith("ControlPath=/cp/maqet-") and len(short[-1]) == 34
    other = multiplex_options(hypervisor_config({"host": "h", "port": 2200}), 60, "/cp")
    assert other[-1] != short[-1]


def test_name_template_has_jinja_filters_and_refuses_unknown_names(plugin, tmp_path, fake_ssh):
    script = fake_ssh({"a": {"vms": [view("Web", tags=["x"])]}})
    inventory = parse(plugin, tmp_path, config(
        script, "name_template: '{{ name | lower }}.{{ hypervisor }}.{{ vm.tags[0] }}'",
        "hypervisors: [{name: hv1, host: a}]"))
    assert set(inventory.hosts) == {"web.hv1.x"}
    with pytest.raises(AnsibleParserError, match="name_template.*'nope' is undefined"):
        parse(plugin, tmp_path, config(script, "name_template: '{{ nope }}'",
                                       "hypervisors: [{name: hv1, host: a}]"))


ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBWHlnhseLcB6KFFD4MBTA4"


def test_guest_host_keys_come_with_the_listing(plugin, tmp_path, fake_ssh):
    """Host keys that maqet on the hypervisor read from a guest's console come in the
    same ssh round trip as the VM list; the plugin writes them on the controller (0600)
    under the name ssh checks (the HostKeyAlias, or [address]:port) and points the guest's
    ssh options at that file, checking strictly."""
    loopback = [{"host": 2222, "guest": 22, "protocol": "tcp", "host_address": "127.0.0.1",
                 "auto": True}]
    everywhere = [{"host": 22, "guest": 22, "protocol": "tcp", "host_address": "0.0.0.0"}]
    keyed = dict(view("lo", ports=loopback), ssh={"user": "root", "host_keys": [ED25519]},
                 known_hosts="/srv/maqet/data/vms/lo/known_hosts")
    keyed["spec"]["cloud_init"] = {"users": [{"name": "root"}]}
    other = dict(view("any", ports=everywhere), ssh={"host_keys": [ED25519]})
    script = fake_ssh({"10.0.0.1": {"vms": [keyed, other, view("nokeys", ports=loopback)]}})
    cache = tmp_path / "cache" / "guests_known_hosts"
    inventory = parse(plugin, tmp_path, config(
        script, "guest_known_hosts_file: {0}".format(cache),
        "hypervisors: [{name: hv1, host: 10.0.0.1}]"))
    assert cache.read_text() == "[10.0.0.1]:2222 {0}\n10.0.0.1 {0}\n".format(ED25519)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    lo = inventory.get_host("lo").get_vars()
    args = shlex.split(lo["ansible_ssh_common_args"])
    assert args[2:] == ["-o", "HostKeyAlias=[10.0.0.1]:2222",
                        "-o", "UserKnownHostsFile={0}".format(cache),
                        "-o", "StrictHostKeyChecking=yes"]
    assert lo["ansible_user"] == "root"
    anywhere = inventory.get_host("any").get_vars()
    assert shlex.split(anywhere["ansible_ssh_common_args"]) == [
        "-o", "UserKnownHostsFile={0}".format(cache), "-o", "StrictHostKeyChecking=yes"]
    nokeys = shlex.split(inventory.get_host("nokeys").get_vars()["ansible_ssh_common_args"])
    assert not any(a.startswith("UserKnownHostsFile") for a in nokeys)
    # The next listing replaces the file whole: a guest gone takes its keys with it.
    fake_ssh({"10.0.0.1": {"vms": [view("nokeys", ports=loopback)]}})
    parse(plugin, tmp_path, config(script, "guest_known_hosts_file: {0}".format(cache),
                                   "hypervisors: [{name: hv1, host: 10.0.0.1}]"))
    assert cache.read_text() == ""


def test_guests_known_hosts_default_to_one_file_per_inventory_source(tmp_path, monkeypatch):
    from ansible_collections.maqet.vm.plugins.inventory.maqet import InventoryModule

    module = InventoryModule()
    module._path = str(tmp_path / "a.maqet.yml")
    monkeypatch.setattr(module, "get_option", lambda name: None)
    first = module._guest_known_hosts_file()
    module._path = str(tmp_path / "b.maqet.yml")
    assert first != module._guest_known_hosts_file()
    assert "{0}maqet{0}guest_known_hosts{0}".format(os.sep) in first


def test_connection_vars_with_login_and_keys():
    ports = [{"host": 40022, "guest": 2200, "protocol": "tcp", "host_address": "127.0.0.1"}]
    vm = {"ports": ports, "known_hosts": "/vms/a b/known_hosts",
          "spec": {"ssh": {"port": 2200}},
          "ssh": {"user": "admin", "private_key": "/k/id", "host_keys": [ED25519]}}
    found = connection_vars(vm, 22)
    assert found["ansible_port"] == 40022 and found["ansible_user"] == "admin"
    assert found["ansible_ssh_private_key_file"] == "/k/id"
    assert shlex.split(found["ansible_ssh_common_args"]) == [
        "-o", 'UserKnownHostsFile="/vms/a b/known_hosts"', "-o", "StrictHostKeyChecking=yes"]
    assert connection_vars(vm, 0) == {}
