"""Playbooks over several hypervisors: one play converges each host's own VMs (host
variables), re-runs change nothing, check mode and diff are per host; and the delegation
pattern, a play over the guests whose VM tasks run on each guest's hypervisor."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet import fleet_inventory
from multihost import run_playbook  # tests/support
from netns import Hypervisors

pytestmark = [pytest.mark.multihost, pytest.mark.ansible]

# Firmware-only VMs that never start their vCPUs (-S): the playbooks measure maqet, not a boot.
CONVERGE = """\
- name: Converge every hypervisor's own VMs
  hosts: hypervisors
  gather_facts: false
  environment:
    PYTHONPATH: "{{ engine_pythonpath }}"
  module_defaults:
    group/maqet.vm.maqet:
      maqet_home: "{{ maqet_home }}"
  tasks:
    - name: VMs of this hypervisor
      maqet.vm.maqet_vm:
        state: "{{ vm_state }}"
        definition: "{{ item | combine({'accel': 'tcg', 'arguments': ['-S']}) }}"
        force: true
      loop: "{{ vms }}"
      loop_control:
        label: "{{ item.name }}"
"""

DELEGATED = """\
- name: Create each guest on its hypervisor
  hosts: guests
  gather_facts: false
  module_defaults:
    group/maqet.vm.maqet:
      maqet_home: "{{ hostvars[hypervisor].maqet_home }}"
  tasks:
    - name: This guest, where it belongs
      maqet.vm.maqet_vm:
        name: "{{ inventory_hostname }}"
        state: "{{ vm_state }}"
        definition:
          accel: tcg
          memory: "{{ memory }}"
          tags: [delegated]
      delegate_to: "{{ hypervisor }}"
      environment:
        PYTHONPATH: "{{ hostvars[hypervisor].engine_pythonpath }}"
"""


def vms_of(host: Any) -> dict[str, dict[str, Any]]:
    """{name: {status, memory}} of a host's home, asked on the host over SSH."""
    from fleet import REPO

    out = host.ssh(f"MAQET_HOME={host.maqet_home} PYTHONPATH={REPO} "
                   f"{host.harness.python} -m maqet_engine --json ls").stdout
    return {vm["name"]: {"status": vm["status"], "memory": vm["spec"].get("memory")}
            for vm in json.loads(out)}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


MIB = 1024 * 1024


def test_one_playbook_converges_each_hosts_own_vms(hypervisors: Hypervisors, tmp_path: Path):
    wanted = {"hv1": [{"name": "fw-a", "memory": "32M"}, {"name": "fw-b", "memory": "48M"}],
              # The same VM name on another hypervisor is another VM.
              "hv2": [{"name": "fw-a", "memory": "64M"}]}
    inventory = fleet_inventory(hypervisors, tmp_path / "inventory.yml",
                                per_host={h: {"vms": v} for h, v in wanted.items()})
    playbook = write(tmp_path / "converge.yml", CONVERGE)
    hv1, hv2 = hypervisors["hv1"], hypervisors["hv2"]

    def run(state: str, *args: str) -> Any:
        result = run_playbook(inventory, playbook, tmp_path, *args,
                              extra_vars={"vm_state": state})
        assert result.rc == 0, result.explain()
        return result

    check = run("running", "--check")
    assert check.recap("hv1")["changed"] == 1 and check.recap("hv2")["changed"] == 1
    assert vms_of(hv1) == {} and vms_of(hv2) == {}

    run("running")
    assert vms_of(hv1) == {"fw-a": {"status": "running", "memory": 32 * MIB},
                           "fw-b": {"status": "running", "memory": 48 * MIB}}
    assert vms_of(hv2) == {"fw-a": {"status": "running", "memory": 64 * MIB}}

    for args in ((), ("--check",)):
        again = run("running", *args)
        assert again.recap("hv1")["changed"] == 0 and again.recap("hv2")["changed"] == 0, \
            again.explain()

    # A change on hv2 only: check mode and diff show it for hv2, and store nothing.
    data = yaml.safe_load(inventory.read_text())
    data["all"]["children"]["hypervisors"]["hosts"]["hv2"]["vms"][0]["memory"] = "96M"
    inventory.write_text(yaml.safe_dump(data))
    diff = run("running", "--check", "--diff")
    assert diff.recap("hv1")["changed"] == 0 and diff.recap("hv2")["changed"] == 1
    assert re.search(r'^-\s+"memory": 67108864,$', diff.stdout, re.MULTILINE), diff.explain()
    assert re.search(r'^\+\s+"memory": 100663296,$', diff.stdout, re.MULTILINE)
    assert "changed: [hv2] => (item=fw-a)" in diff.stdout
    assert vms_of(hv2)["fw-a"]["memory"] == 64 * MIB

    gone = run("absent")
    assert gone.recap("hv1")["changed"] == 1 and gone.recap("hv2")["changed"] == 1
    assert vms_of(hv1) == {} and vms_of(hv2) == {}


def test_guests_are_created_where_they_belong_by_delegation(hypervisors: Hypervisors,
                                                            tmp_path: Path):
    inventory = fleet_inventory(hypervisors, tmp_path / "inventory.yml")
    data = yaml.safe_load(inventory.read_text())
    # The guests are planned, not there yet: only their hypervisor and size are known.
    data["all"]["children"]["guests"] = {"hosts": {
        "web1": {"hypervisor": "hv1", "memory": "32M"},
        "web2": {"hypervisor": "hv2", "memory": "32M"},
        "db1": {"hypervisor": "hv2", "memory": "48M"},
    }}
    inventory.write_text(yaml.safe_dump(data))
    playbook = write(tmp_path / "delegated.yml", DELEGATED)

    first = run_playbook(inventory, playbook, tmp_path, extra_vars={"vm_state": "present"})
    assert first.rc == 0, first.explain()
    for guest in ("web1", "web2", "db1"):
        assert first.recap(guest)["changed"] == 1, first.explain()
    assert "changed: [web2 -> hv2(" in first.stdout, first.explain()
    assert vms_of(hypervisors["hv1"]) == {"web1": {"status": "defined", "memory": 32 * MIB}}
    assert vms_of(hypervisors["hv2"]) == {"web2": {"status": "defined", "memory": 32 * MIB},
                                          "db1": {"status": "defined", "memory": 48 * MIB}}

    again = run_playbook(inventory, playbook, tmp_path, extra_vars={"vm_state": "present"})
    assert again.rc == 0, again.explain()
    assert all(again.recap(g)["changed"] == 0 for g in ("web1", "web2", "db1"))

    gone = run_playbook(inventory, playbook, tmp_path, extra_vars={"vm_state": "absent"})
    assert gone.rc == 0, gone.explain()
    assert vms_of(hypervisors["hv1"]) == {} and vms_of(hypervisors["hv2"]) == {}
