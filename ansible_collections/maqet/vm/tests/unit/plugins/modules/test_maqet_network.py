"""maqet_network and maqet_network_info's main() against the real engine in a temporary
MAQET_HOME (no QEMU: networks and definitions only)."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.maqet.vm.plugins.modules import (
    maqet_network,
    maqet_network_info,
    maqet_vm,
)


def run_module(module, capsys, args):
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def home(tmp_path):
    return str(tmp_path / "home")


def test_present_four_ways_diff_and_absent(home, capsys):
    base = {"maqet_home": home, "name": "lab", "type": "segment"}
    check = run_module(maqet_network, capsys, {**base, "_ansible_check_mode": True})
    assert check["changed"] and check["actions"] == [{"action": "define_network"}]
    first = run_module(maqet_network, capsys, {**base, "_ansible_diff": True})
    assert first["changed"] and first["diff"]["before"] == {}
    spec = first["network"]["spec"]
    assert spec["interface"] == "lo" and spec["ttl"] == 1 and spec["group"].startswith("239.255.")
    again = run_module(maqet_network, capsys, {**base, "ttl": 1, "group": spec["group"]})
    assert not again["changed"] and again["actions"] == []
    assert not run_module(maqet_network, capsys, {**base, "_ansible_check_mode": True})["changed"]
    changed = run_module(maqet_network, capsys, {**base, "ttl": 2, "_ansible_diff": True})
    assert changed["actions"] == [{"action": "redefine_network"}]
    assert (changed["diff"]["before"]["spec"]["ttl"], changed["diff"]["after"]["spec"]["ttl"]) \
        == (1, 2)
    info = run_module(maqet_network_info, capsys, {"maqet_home": home, "name": "lab"})
    assert info["exists"] and info["networks"][0]["spec"]["ttl"] == 2 and not info["changed"]
    absent = {"maqet_home": home, "name": "lab", "state": "absent"}
    results = [run_module(maqet_network, capsys, {**absent, "_ansible_check_mode": True}),
               run_module(maqet_network, capsys, absent),
               run_module(maqet_network, capsys, absent),
               run_module(maqet_network, capsys, {**absent, "_ansible_check_mode": True})]
    assert [r["changed"] for r in results] == [True, True, False, False]
    info = run_module(maqet_network_info, capsys, {"maqet_home": home, "name": "lab"})
    assert not info["exists"]


def test_in_use_fails_naming_the_vms_and_vm_info_lists_nics(home, capsys):
    run_module(maqet_network, capsys, {"maqet_home": home, "name": "wire", "type": "link"})
    vm = run_module(maqet_vm, capsys, {"maqet_home": home, "definition": {
        "name": "a", "network": [{"type": "user"}, {"network": "wire", "end": "a"}]}})
    nic = vm["vm"]["networks"][1]
    assert (nic["network"], nic["network_type"], nic["end"]) == ("wire", "link", "a")
    failed = run_module(maqet_network, capsys, {"maqet_home": home, "name": "wire",
                                                "state": "absent"})
    assert failed["failed"] and failed["error_type"] == "NetworkInUse"
    assert failed["msg"].startswith("network 'wire' is used by VM(s) a;")
    taken = run_module(maqet_vm, capsys, {"maqet_home": home, "definition": {
        "name": "b", "network": [{"network": "wire", "end": "a"}]}})
    assert taken["failed"] and "end a of link 'wire' is taken by VM 'a'" in taken["msg"]


def test_options_and_definition(home, capsys):
    missing = run_module(maqet_network, capsys, {"maqet_home": home, "name": "x"})
    assert missing["failed"] and "type" in missing["msg"]
    bad = run_module(maqet_network, capsys, {"maqet_home": home, "name": "x",
                                             "type": "segment", "port": 80})
    assert bad["failed"] and bad["error_type"] == "ConfigError" and bad["msg"].startswith("port:")
    ok = run_module(maqet_network, capsys, {"maqet_home": home, "name": "x",
                                            "definition": {"type": "link", "a": "10.0.0.1"},
                                            "end_b": "10.0.0.2:31000"})
    assert ok["network"]["spec"]["b"] == "10.0.0.2:31000"
    assert ok["network"]["spec"]["a"].startswith("10.0.0.1:")
