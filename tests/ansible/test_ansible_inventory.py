"""ansible-inventory with the maqet.vm.maqet plugin: groups, host vars, compose,
include_stopped, ansible_host/port, strict; running VMs from real QEMU."""

from __future__ import annotations

import json

import pytest
from ansible_helpers import guest_definition

pytestmark = pytest.mark.ansible

CONFIG = """\
plugin: maqet.vm.maqet
maqet_home: maqet-home
{more}
compose:
  memory_mib: (maqet_memory or 0) // 1048576
groups:
  big: (maqet_memory or 0) >= 1073741824
keyed_groups:
  - key: maqet_accel
    prefix: accel
    default_value: unknown
"""


def inventory(sandbox, name: str, more: str = "", *args: str) -> dict:
    config = sandbox.root / name
    config.write_text(CONFIG.format(more=more))
    run = sandbox.inventory_list(config, "--list", *args)
    assert run.rc == 0, run.explain()
    return json.loads(run.stdout)


def plain(value):
    """--list shows plugin-set strings as {"__ansible_unsafe": ...} in ansible-core 2.19."""
    if isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
        return value["__ansible_unsafe"]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def test_defined_vms_with_include_stopped(sandbox):
    run = sandbox.playbook("inventory_vms.yml")
    assert run.rc == 0, run.explain()

    listed = inventory(sandbox, "demo.maqet.yml")
    assert listed["_meta"]["hostvars"] == {}  # nothing runs: nothing listed by default

    listed = inventory(sandbox, "all.maqet.yaml", "include_stopped: true")
    hostvars = plain(listed["_meta"]["hostvars"])
    assert sorted(hostvars) == ["db1", "web1"]
    web = hostvars["web1"]
    assert web["maqet_status"] == "defined" and web["maqet_tags"] == ["prod", "role:web"]
    assert web["ansible_host"] == "127.0.0.1" and web["ansible_port"] == 2201
    assert web["memory_mib"] == 2048 and web["maqet_cpu"] == 2
    assert len(web["maqet_spec_hash"]) == 64 and web["maqet_qemu_pid"] is None
    assert "ansible_host" not in hostvars["db1"]  # its forward is not to port 22
    assert sorted(listed["maqet_defined"]["hosts"]) == ["db1", "web1"]
    assert listed["maqet_tag_role_web"]["hosts"] == ["web1"]
    assert sorted(listed["maqet_tag_prod"]["hosts"]) == ["db1", "web1"]
    assert listed["big"]["hosts"] == ["web1"]
    assert sorted(listed["accel_unknown"]["hosts"]) == ["db1", "web1"]


def test_strict_compose_error_fails(sandbox):
    run = sandbox.playbook("inventory_vms.yml")
    assert run.rc == 0, run.explain()
    config = sandbox.root / "strict.maqet.yml"
    config.write_text("plugin: maqet.vm.maqet\nmaqet_home: maqet-home\ninclude_stopped: true\n"
                      "strict: true\ncompose:\n  broken: maqet_no_such_var + 1\n")
    run = sandbox.inventory_list(config, "--list")
    assert run.rc != 0 and "maqet_no_such_var" in run.stderr, run.explain()
    config.write_text(config.read_text().replace("strict: true", "strict: false"))
    run = sandbox.inventory_list(config, "--list")
    assert run.rc == 0, run.explain()


def test_other_file_names_are_not_ours(sandbox):
    config = sandbox.root / "demo.yml"
    config.write_text("plugin: maqet.vm.maqet\n")
    run = sandbox.inventory_list(config, "--list")
    assert run.rc != 0, run.explain()  # unparsed inventories fail in the sandbox


@pytest.mark.qemu
def test_running_vm_is_listed_with_pids(sandbox, guest_ready):
    guest = guest_definition("inv1", tags=["e2e", "demo"], network=[
        {"type": "user", "forward": [{"host": 2299, "guest": 22}]}])
    run = sandbox.playbook("inventory_running.yml", extra_vars={"guest": guest})
    assert run.rc == 0, run.explain()
    listed = inventory(sandbox, "demo.maqet.yml")
    hostvars = plain(listed["_meta"]["hostvars"])
    assert list(hostvars) == ["inv1"]
    inv1 = hostvars["inv1"]
    assert inv1["maqet_status"] == "running" and inv1["maqet_qemu_pid"] > 0
    assert inv1["maqet_runner_pid"] > 0 and inv1["maqet_accel"] == "tcg"
    assert inv1["ansible_host"] == "127.0.0.1" and inv1["ansible_port"] == 2299
    assert listed["maqet_running"]["hosts"] == ["inv1"]
    assert listed["maqet_tag_demo"]["hosts"] == ["inv1"]
    assert listed["accel_tcg"]["hosts"] == ["inv1"]
    # --host shows plain values
    run = sandbox.inventory_list(sandbox.root / "demo.maqet.yml", "--host", "inv1")
    assert run.rc == 0 and json.loads(run.stdout)["maqet_status"] == "running", run.explain()
