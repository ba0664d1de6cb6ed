"""End to end over two hypervisor hosts: one playbook prepares both with the role, boots
two SSH guests on each (the same names and forwarded ports on both) and waits for SSH in
the same task, refreshes the multi-host inventory, runs a command inside every guest
through its hypervisor, and tears everything down. Host keys are checked everywhere: the
hypervisors' from the harness; the guests' are the ones maqet on each hypervisor read from
the guest's console, which the plugin brought along with the VM list and wrote under each
guest's HostKeyAlias. The playbook configures no key, user or known_hosts for the guests:
the inventory does (the definitions' ``ssh`` and ``cloud_init`` sections)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import guest  # tests/guest
import pytest
import yaml
from fleet import engine_wheel, fleet_inventory, plugin_config
from multihost import run_playbook  # tests/support
from netns import Hypervisors

pytestmark = [pytest.mark.multihost, pytest.mark.ansible, pytest.mark.qemu]

PORTS = {"a": 2222, "b": 2223}  # the same on both hosts: each forward binds its own netns
E2E_TIMEOUT = 600.0  # role ~30 s, four TCG boots ~10 s, the rest ~30 s

PLAYBOOK = """\
- name: Prepare the hypervisors
  hosts: hypervisors
  gather_facts: false
  roles:
    - role: maqet.vm.hypervisor
      vars:
        maqet_hypervisor_set_python: true

- name: Bring the guests up
  hosts: hypervisors
  gather_facts: false
  module_defaults:
    group/maqet.vm.maqet:
      maqet_home: "{{ maqet_home }}"
  tasks:
    - name: Guests of this hypervisor, SSH-able when the task returns
      maqet.vm.maqet_vm:
        state: running
        definition: "{{ item }}"
        wait: {ssh: true, timeout: 120}
      loop: "{{ guests }}"
      loop_control:
        label: "{{ item.name }}"

- name: List the guests
  hosts: localhost
  gather_facts: false
  tasks:
    - name: See the guests
      ansible.builtin.meta: refresh_inventory

    - name: Every guest is listed, with its hypervisor
      ansible.builtin.assert:
        that:
          - groups['maqet'] | sort == ['hv1-a', 'hv1-b', 'hv2-a', 'hv2-b']
          - groups['maqet_hypervisor_hv1'] | sort == ['hv1-a', 'hv1-b']
          - hostvars['hv2-b'].maqet_hypervisor == 'hv2'
          - hostvars['hv2-b'].ansible_user == 'root'

- name: Inside every guest, through its hypervisor
  hosts: maqet
  gather_facts: false
  vars:
    ansible_python_interpreter: /usr/bin/python3
    ansible_ssh_extra_args: -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes
  tasks:
    - name: Kernel command line (it names the guest)
      ansible.builtin.command: cat /proc/cmdline
      register: cmdline
      changed_when: false

    - name: Facts, through Python in the guest
      ansible.builtin.setup:
        gather_subset: [min]

    - name: Keep what the controller checks
      ansible.builtin.set_fact:
        seen:
          cmdline: "{{ cmdline.stdout }}"
          distribution: "{{ ansible_facts.distribution }}"

- name: Tear everything down
  hosts: hypervisors
  gather_facts: false
  module_defaults:
    group/maqet.vm.maqet:
      maqet_home: "{{ maqet_home }}"
  tasks:
    - name: Guests of this hypervisor
      maqet.vm.maqet_vm:
        name: "{{ item.name }}"
        state: absent
        force: true
        purge: true
      loop: "{{ guests }}"
      loop_control:
        label: "{{ item.name }}"

- name: Write what the guests said on the controller
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Results file
      ansible.builtin.copy:
        dest: "{{ results_file }}"
        content: "{{ dict(groups['maqet'] | zip(groups['maqet'] | map('extract', hostvars, 'seen')))
                    | to_nice_json }}"
        mode: "0600"
"""


@pytest.fixture
def forwarding_hypervisors() -> Iterator[Hypervisors]:
    """Two hosts whose sshd lets a client reach the host's own loopback (ssh -W): what a
    ProxyCommand through a hypervisor needs."""
    hv = Hypervisors(2, sshd_config_extra="AllowTcpForwarding local")
    with hv:
        yield hv
    assert not hv.leftovers(), "the harness left something behind"


def guests_of(host: str, files: guest.GuestFiles, key: guest.SSHKeyPair) -> list[dict]:
    """Root's key from the cloud-init seed, the key file for the inventory in ``ssh``."""
    return [guest.guest_definition(
        name, files, append=f"{guest.SSH_GUEST_APPEND} maqet.test_name={host}-{name}",
        arguments=["-no-reboot", "-device", "virtio-rng-pci"],
        cloud_init={"users": [{"name": "root", "ssh_authorized_keys": [key.public_line]}]},
        ssh={"private_key": str(key.private_key)},
        network=[{"type": "user",
                  "forward": [{"host": port, "guest": 22, "host_address": "127.0.0.1"}]}])
        for name, port in PORTS.items()]


def test_fleet_end_to_end(forwarding_hypervisors: Hypervisors, tmp_path: Path):
    hv = forwarding_hypervisors
    engine_wheel()
    files = guest.ensure_ssh_guest()
    key = guest.make_ssh_keypair(tmp_path, comment="maqet-e2e")
    inventory = fleet_inventory(hv, tmp_path / "hypervisors.yml", engine="none", per_host={
        host.name: {"guests": guests_of(host.name, files, key)} for host in hv})
    known_hosts = tmp_path / "guest_known_hosts"
    guests = plugin_config(hv, tmp_path / "guests.maqet.yml", engine="venv",
                           name_template="{{ hypervisor }}-{{ name }}",
                           guest_known_hosts_file=str(known_hosts))
    playbook = tmp_path / "fleet.yml"
    playbook.write_text(PLAYBOOK)
    out = tmp_path / "seen.json"

    run = run_playbook(inventory, playbook, tmp_path, "-i", str(guests), timeout=E2E_TIMEOUT,
                       extra_vars={"results_file": str(out)})
    assert run.rc == 0, run.explain()
    seen = json.loads(out.read_text())
    assert sorted(seen) == ["hv1-a", "hv1-b", "hv2-a", "hv2-b"]
    for name, what in seen.items():
        # Each connection reached the guest it names: same ports, other hypervisors.
        assert f"maqet.test_name={name}" in what["cmdline"].split(), what
        assert what["distribution"] == "Debian"
    # One key per guest, each under its own alias, although the ports repeat: written by
    # the plugin from the keys maqet read on each hypervisor (the guests are gone now, so
    # the last listing, before the teardown, is what the file holds).
    lines = [line.split() for line in known_hosts.read_text().splitlines() if line.strip()]
    assert sorted(line[0] for line in lines) == sorted(
        f"[{h.address}]:{port}" for h in hv for port in PORTS.values())
    assert len({line[2] for line in lines}) == 4
    for host in hv:
        assert run.recap(host.name)["failed"] == 0
        assert json.loads(host.ssh(
            f"MAQET_HOME={host.maqet_home} {host.dir}/venv/bin/maqet --json ls").stdout) == []
    assert yaml.safe_load(guests.read_text())["hypervisors"][0]["name"] == "hv1"
