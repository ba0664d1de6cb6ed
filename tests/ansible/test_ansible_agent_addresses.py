"""Ansible over SSH into a guest on a bridged network, at the address its guest agent
reports: the inventory plugin's ``agent_addresses`` end to end (root).

The ssh guest (dropbear, python3, qemu-ga; root's key on the kernel command line) boots
under TCG with ``agent: true`` and one NIC on a maqet ``bridged`` network attached to the
test's own bridge (the ``lab_bridge`` fixture: no address in the root namespace, a
namespace on a veth holding an address of a /24 nothing else uses). Its /init puts the
slirp address 10.0.2.15 on eth0 whatever the network; the test replaces it with a static
address of the lab's /24 through the serial console (and a link-local and a unique
local IPv6 address). Then:

- maqet keeps the host keys the guest printed, under the VM's host key alias, although no
  forward names the guest (``ssh.host_key_alias``);
- ``ansible-inventory`` with ``agent_addresses``: ``maqet_guest_addresses`` is the static
  address with its prefix, then the IPv6 one (the agent also reports loopback and
  link-local: left out),
  ``ansible_host`` is that address (no forward reaches the guest), with the guest's SSH
  port, the definition's login and host key checking against the VM's known_hosts under
  its alias;
- ``ansible-playbook`` run in the namespace (the only place that reaches the guest; maqet's
  home and runner sockets are on the shared filesystem) logs in over real SSH, host key
  checking on, and the guest's SSH server sees the connection between the namespace's
  address and its own;
- the same known_hosts without the alias does not cover the address: ssh refuses.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import shlex
import subprocess
from pathlib import Path
from typing import Any

import guest
import pytest
from guestnet import GuestShell
from netns import netns_pids

from maqet_engine import engine
from maqet_engine.engine import lifecycle
from maqet_engine.store import Store

pytestmark = [pytest.mark.ansible, pytest.mark.qemu]

BOOT_TIMEOUT = 120.0  # QEMU start -> the ssh guest's marker: ~3 s under TCG here
AGENT_TIMEOUT = 60  # the inventory's agent_timeout: qemu-ga answers ~0.1 s after the marker
SSH_TIMEOUT = 60.0  # one ssh command; ~0.3 s here


def bridged_ssh_guest(name: str, network: str, keys: guest.SSHKeyPair) -> dict[str, Any]:
    files = guest.ensure_ssh_guest()
    return guest.guest_definition(
        name, files, append=guest.ssh_guest_append(keys.public_line), agent=True,
        network=[{"network": network}],
        ssh={"user": "root", "private_key": str(keys.private_key)},
        arguments=["-no-reboot", "-device", "virtio-rng-pci"])


def test_ansible_reaches_a_bridged_guest_at_its_agent_address(sandbox, lab_bridge, tmp_path):
    ctx = engine.EngineContext.for_home(str(sandbox.home))
    keys = guest.make_ssh_keypair(tmp_path)
    network, name = f"br-{secrets.token_hex(3)}", "bridged1"
    engine.apply_network(ctx, engine.load_network(ctx, definition={
        "name": network, "type": "bridged", "bridge": lab_bridge.bridge}))
    spec = engine.load_definition(ctx, definition=bridged_ssh_guest(name, network, keys))
    engine.apply(ctx, spec=spec, state="running")
    assert engine.show(ctx, name).data["ports"] == []  # nothing forwarded: no way in but L2

    # The guest's own address on the bridge, typed on its serial root shell.
    marker = engine.wait_console(ctx, name, re.escape(guest.SSH_GUEST_MARKER),
                                 timeout=BOOT_TIMEOUT).data
    shell = GuestShell(ctx, name)
    shell.offset = marker["offset"]
    address = lab_bridge.guest_address()
    host = address.split("/", 1)[0]
    # Also a link-local address, which must not be chosen (this guest's kernel adds none
    # itself here), and a unique local IPv6 one, which must come after the IPv4 one.
    ula = str(ipaddress.ip_interface(f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}::3/64"))
    shell.check(f"ip addr flush dev eth0 && ip addr add {address} dev eth0 && "
                f"ip addr add fe80::3/64 dev eth0 && ip addr add {ula} dev eth0")

    # Its host keys, from this boot's console, kept under the VM's alias only.
    with Store.open(ctx.paths.db) as store:
        report = lifecycle.call(ctx.paths, store, name, "host_keys", timeout=BOOT_TIMEOUT,
                                ipc_timeout=BOOT_TIMEOUT + 30)
    assert report["this_boot"] and report["keys"]
    view = engine.show(ctx, name).data
    alias = f"maqet-vm-{name}"
    assert view["ssh"]["host_key_alias"] == alias
    assert view["ssh"]["host_keys"] == report["keys"]
    known_hosts = Path(view["known_hosts"])
    assert known_hosts.read_text() == "".join(f"{alias} {key}\n" for key in report["keys"])

    # What the agent reports, unfiltered: loopback and link-local too.
    reported = [a for iface in engine.guest_info(ctx, name, agent_timeout=AGENT_TIMEOUT)
                .data["interfaces"] for a in iface.get("addresses") or []]
    assert {"127.0.0.1/8", "::1/128", "fe80::3/64", address, ula} <= set(reported), reported

    config = sandbox.root / "bridged.maqet.yml"
    config.write_text(f"""\
plugin: maqet.vm.maqet
maqet_home: {sandbox.home}
agent_addresses: true
agent_connection: false
agent_timeout: {AGENT_TIMEOUT}
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
""")
    run = sandbox.inventory_list(config, "--host", name)
    assert run.rc == 0, run.explain()
    hostvars = json.loads(run.stdout)
    addresses = hostvars["maqet_guest_addresses"]
    assert address in addresses, addresses
    for text in addresses:
        ip = ipaddress.ip_interface(text).ip
        assert not (ip.is_loopback or ip.is_link_local), addresses
    assert addresses == [address, ula]  # IPv4 first
    assert hostvars["ansible_host"] == host
    assert hostvars["ansible_port"] == 22
    assert hostvars["ansible_user"] == "root"
    assert hostvars["ansible_ssh_private_key_file"] == str(keys.private_key)
    assert shlex.split(hostvars["ansible_ssh_common_args"]) == [
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", f"HostKeyAlias={alias}"]
    assert "ansible_connection" not in hostvars  # agent_connection: false -> SSH

    # A real play from the namespace on the bridge. No ControlPersist master: nothing of
    # the play may outlive it in the namespace.
    run = sandbox.playbook(
        "agent_addresses.yml", args=("-i", str(config)),
        prefix=("ip", "netns", "exec", lab_bridge.netns),
        env={"ANSIBLE_SSH_ARGS": "-o ControlMaster=no", "ANSIBLE_HOST_KEY_CHECKING": "true"},
        extra_vars={"expected_hostname": "maqet-ssh-guest", "expected_address": host,
                    "expected_client": lab_bridge.peer})
    assert run.rc == 0, run.explain()
    assert run.recap(name) == {"ok": 3, "changed": 0, "unreachable": 0, "failed": 0,
                               "skipped": 0, "rescued": 0, "ignored": 0}, run.explain()
    assert netns_pids(lab_bridge.netns) == [], "the play left processes in the namespace"

    # Host key checking is real: the VM's known_hosts does not name the address itself.
    ssh = [guest.program("ssh"), *guest.ssh_options(keys.private_key, known_hosts),
           f"root@{host}", "true"]
    refused = subprocess.run(["ip", "netns", "exec", lab_bridge.netns, *ssh],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=SSH_TIMEOUT, check=False)
    assert refused.returncode == 255, refused.stderr
    assert re.search(r"Host key verification failed|No ED25519 host key is known",
                     refused.stderr), refused.stderr
    accepted = subprocess.run(["ip", "netns", "exec", lab_bridge.netns, ssh[0], "-o",
                               f"HostKeyAlias={alias}", *ssh[1:]],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=SSH_TIMEOUT, check=False)
    assert accepted.returncode == 0, accepted.stderr
