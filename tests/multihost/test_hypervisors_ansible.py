"""The real ansible-playbook against the harness's inventory: SSH to each host, host key
checking on, per-host results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from multihost import control_path_dir, run_playbook  # tests/support
from netns import Hypervisors
from procs import pids_mentioning, wait_gone

pytestmark = [pytest.mark.multihost, pytest.mark.ansible]

PROBE = """\
- name: Reach every hypervisor
  hosts: hypervisors
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
      register: pong
    - name: Addresses as the host sees them
      ansible.builtin.command: ip -br -4 addr
      register: addrs
      changed_when: false
    - name: Host name
      ansible.builtin.command: hostname
      register: uts
      changed_when: false
    - name: Both ends of this SSH connection
      ansible.builtin.shell: echo "$SSH_CONNECTION"
      register: conn
      changed_when: false
    - name: The host's own maqet home
      ansible.builtin.stat:
        path: "{{ maqet_home }}"
      register: home
    - name: Keep what the controller checks
      ansible.builtin.set_fact:
        probe:
          ping: "{{ pong.ping }}"
          addrs: "{{ addrs.stdout }}"
          hostname: "{{ uts.stdout }}"
          ssh_connection: "{{ conn.stdout }}"
          maqet_home: "{{ maqet_home }}"
          home_is_dir: "{{ home.stat.isdir }}"

- name: Write the per-host results on the controller
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Results file
      ansible.builtin.copy:
        dest: "{{ results_file }}"
        content: "{{ dict(groups.hypervisors | zip(groups.hypervisors
                    | map('extract', hostvars, 'probe'))) | to_nice_json }}"
        mode: "0600"
"""

PING = """\
- name: Ping every hypervisor
  hosts: hypervisors
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_playbook_reaches_each_host_over_ssh(hypervisors: Hypervisors, tmp_path: Path):
    results = tmp_path / "results.json"
    run = run_playbook(hypervisors.inventory, write(tmp_path / "probe.yml", PROBE), tmp_path,
                       extra_vars={"results_file": str(results)})
    assert run.rc == 0, run.explain()
    for host in hypervisors:
        assert run.recap(host.name)["ok"] == 6, run.explain()
        assert run.recap(host.name)["unreachable"] == 0
    per_host = json.loads(results.read_text())
    assert sorted(per_host) == ["hv1", "hv2"]
    for host in hypervisors:
        seen = per_host[host.name]
        assert seen["ping"] == "pong"
        addrs = {line.split()[0].split("@")[0]: line.split()[2:]
                 for line in seen["addrs"].splitlines()}
        assert addrs == {"lo": ["127.0.0.1/8"], "net0": [f"{host.address}/24"]}, seen
        # client address, client port, server address, server port
        client, _, server, port = seen["ssh_connection"].split()
        assert (client, server, port) == (hypervisors.bridge_address, host.address, "22")
        assert seen["maqet_home"] == str(host.maqet_home)
        assert seen["home_is_dir"] is True
        assert seen["hostname"]  # one UTS namespace: the same name everywhere
    # Ansible kept its state in the sandbox.
    assert (tmp_path / "ansible-home").is_dir() and control_path_dir(tmp_path).is_dir()


def test_a_down_host_is_unreachable_and_the_other_is_not(hypervisors: Hypervisors,
                                                         tmp_path: Path):
    hypervisors["hv2"].down("sshd")
    run = run_playbook(hypervisors.inventory, write(tmp_path / "ping.yml", PING), tmp_path)
    assert run.rc == 4, run.explain()  # 4: some host was unreachable
    assert run.recap("hv1")["ok"] == 1, run.explain()
    assert run.recap("hv2")["unreachable"] == 1, run.explain()
    assert "UNREACHABLE" in run.stdout and "Connection refused" in run.stdout, run.explain()
    hypervisors["hv2"].up()
    again = run_playbook(hypervisors.inventory, tmp_path / "ping.yml", tmp_path)
    assert again.rc == 0, again.explain()
    assert again.recap("hv2")["ok"] == 1


def test_ansible_leaves_no_ssh_master_after_teardown(tmp_path: Path):
    """Ansible's ssh ControlPersist masters (60 s by default) live in the root namespace;
    when teardown kills the hosts' sessions they exit at once."""
    with Hypervisors(1) as hv:
        run = run_playbook(hv.inventory, write(tmp_path / "ping.yml", PING), tmp_path)
        assert run.rc == 0, run.explain()
        masters = pids_mentioning(control_path_dir(tmp_path))
        assert masters, "expected ansible's ssh ControlPersist master"
    assert not wait_gone(masters, timeout=5.0), "ssh masters outlived their host"
