"""End to end over two hypervisor hosts: one playbook prepares both with the role, boots
two SSH guests on each (the same names and forwarded ports on both), refreshes the
multi-host inventory, runs a command inside every guest through its hypervisor (host
keys checked everywhere: the hypervisors' from the harness, the guests' read from their
serial consoles), and tears everything down."""

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
    - name: Guests of this hypervisor
      maqet.vm.maqet_vm:
        state: running
        definition: "{{ item }}"
      loop: "{{ guests }}"
      loop_control:
        label: "{{ item.name }}"
      register: started

    - name: Wait until each guest's SSH is up
      ansible.builtin.command:
        argv: ["{{ maqet_hypervisor.maqet }}", wait, "{{ item.name }}", MAQET-GUEST-SSH-READY,
               --timeout, "60"]
      environment:
        MAQET_HOME: "{{ maqet_home }}"
      loop: "{{ guests }}"
      loop_control:
        label: "{{ item.name }}"
      changed_when: false

    - name: Read each guest's host keys from its serial console
      ansible.builtin.command:
        argv:
          - "{{ maqet_hypervisor.python }}"
          - -c
          - |
            import sys
            from maqet_engine.cloudinit import host_keys_from_console
            with open(sys.argv[1], encoding="utf-8", errors="replace") as log:
                print("\\n".join(host_keys_from_console(log.read())))
          - "{{ item.vm.paths.serial_log }}"
      loop: "{{ started.results }}"
      loop_control:
        label: "{{ item.item.name }}"
      register: host_keys
      changed_when: false

- name: Trust the guests' host keys, and list the guests
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Known hosts of the guests (under the inventory's HostKeyAlias)
      ansible.builtin.copy:
        dest: "{{ guest_known_hosts }}"
        mode: "0600"
        content: |
          {% for hv in groups['hypervisors'] %}
          {% for found in hostvars[hv].host_keys.results %}
          {% for key in found.stdout_lines %}
          [{{ hostvars[hv].ansible_host }}]:{{ found.item.vm.ports[0].host }} {{ key }}
          {% endfor %}
          {% endfor %}
          {% endfor %}

    - name: See the guests
      ansible.builtin.meta: refresh_inventory

    - name: Every guest is listed, with its hypervisor
      ansible.builtin.assert:
        that:
          - groups['maqet'] | sort == ['hv1-a', 'hv1-b', 'hv2-a', 'hv2-b']
          - groups['maqet_hypervisor_hv1'] | sort == ['hv1-a', 'hv1-b']
          - hostvars['hv2-b'].maqet_hypervisor == 'hv2'

- name: Inside every guest, through its hypervisor
  hosts: maqet
  gather_facts: false
  vars:
    ansible_user: root
    ansible_python_interpreter: /usr/bin/python3
    ansible_ssh_private_key_file: "{{ guest_key }}"
    ansible_ssh_extra_args: >-
      -o UserKnownHostsFile={{ guest_known_hosts }} -o GlobalKnownHostsFile=/dev/null
      -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes
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


def guests_of(host: str, files: guest.GuestFiles, public_key: str) -> list[dict]:
    return [guest.guest_definition(
        name, files, append=guest.ssh_guest_append(
            public_key, base=f"{guest.SSH_GUEST_APPEND} maqet.test_name={host}-{name}"),
        arguments=["-no-reboot", "-device", "virtio-rng-pci"],
        network=[{"type": "user",
                  "forward": [{"host": port, "guest": 22, "host_address": "127.0.0.1"}]}])
        for name, port in PORTS.items()]


def test_fleet_end_to_end(forwarding_hypervisors: Hypervisors, tmp_path: Path):
    hv = forwarding_hypervisors
    engine_wheel()
    files = guest.ensure_ssh_guest()
    key = guest.make_ssh_keypair(tmp_path, comment="maqet-e2e")
    inventory = fleet_inventory(hv, tmp_path / "hypervisors.yml", engine="none", per_host={
        host.name: {"guests": guests_of(host.name, files, key.public_line)} for host in hv})
    guests = plugin_config(hv, tmp_path / "guests.maqet.yml", engine="venv",
                           name_template="{{ hypervisor }}-{{ name }}")
    playbook = tmp_path / "fleet.yml"
    playbook.write_text(PLAYBOOK)
    known_hosts = tmp_path / "guest_known_hosts"
    out = tmp_path / "seen.json"

    run = run_playbook(inventory, playbook, tmp_path, "-i", str(guests), timeout=E2E_TIMEOUT,
                       extra_vars={"guest_key": str(key.private_key),
                                   "guest_known_hosts": str(known_hosts),
                                   "results_file": str(out)})
    assert run.rc == 0, run.explain()
    seen = json.loads(out.read_text())
    assert sorted(seen) == ["hv1-a", "hv1-b", "hv2-a", "hv2-b"]
    for name, what in seen.items():
        # Each connection reached the guest it names: same ports, other hypervisors.
        assert f"maqet.test_name={name}" in what["cmdline"].split(), what
        assert what["distribution"] == "Debian"
    # One key per guest, each under its own alias, although the ports repeat.
    lines = [line.split() for line in known_hosts.read_text().splitlines() if line.strip()]
    assert sorted(line[0] for line in lines) == sorted(
        f"[{h.address}]:{port}" for h in hv for port in PORTS.values())
    assert len({line[2] for line in lines}) == 4
    for host in hv:
        assert run.recap(host.name)["failed"] == 0
        assert json.loads(host.ssh(
            f"MAQET_HOME={host.maqet_home} {host.dir}/venv/bin/maqet --json ls").stdout) == []
    assert yaml.safe_load(guests.read_text())["hypervisors"][0]["name"] == "hv1"
