"""maqet_vm's main() against the real engine in a temporary MAQET_HOME (no QEMU:
present/absent only)."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.maqet.vm.plugins.modules import maqet_console, maqet_vm, maqet_vm_info


def run_module(module, capsys, args):
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def home(tmp_path):
    return str(tmp_path / "home")


def test_present_four_ways_and_absent(home, capsys):
    config = {"name": "u1", "memory": "256M", "tags": ["b", "a"]}
    base = {"maqet_home": home, "definition": config}
    check = run_module(maqet_vm, capsys, {**base, "_ansible_check_mode": True})
    assert check["changed"] and check["actions"] == [{"action": "define"}]
    assert check["vm"] is None
    first = run_module(maqet_vm, capsys, base)
    assert first["changed"] and first["vm"]["status"] == "defined"
    assert first["vm"]["tags"] == ["a", "b"] and "diff" not in first
    again = run_module(maqet_vm, capsys, {**base, "_ansible_diff": True})
    assert not again["changed"] and again["diff"]["before"] == again["diff"]["after"]
    check = run_module(maqet_vm, capsys, {**base, "_ansible_check_mode": True})
    assert not check["changed"]

    info = run_module(maqet_vm_info, capsys, {"maqet_home": home, "name": "u1"})
    assert info["exists"] and info["vms"][0]["spec"]["memory"] == 256 * 1024 * 1024

    gone = run_module(maqet_vm, capsys, {"maqet_home": home, "name": "u1", "state": "absent"})
    assert gone["changed"] and gone["actions"] == [{"action": "remove"}]
    gone = run_module(maqet_vm, capsys, {"maqet_home": home, "name": "u1", "state": "absent"})
    assert not gone["changed"]


def test_diff_of_a_new_vm_starts_empty(home, capsys):
    result = run_module(maqet_vm, capsys, {"maqet_home": home, "definition": {"name": "u2"},
                                           "_ansible_diff": True, "_ansible_check_mode": True})
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["status"] == "defined"
    assert result["diff"]["after"]["spec"]["name"] == "u2"


def test_the_first_option_names_still_work(home, capsys):
    """config / config_file were renamed definition / definition_file: aliases kept."""
    result = run_module(maqet_vm, capsys, {"maqet_home": home, "config": {"name": "old"}})
    assert result["changed"] and result["vm"]["name"] == "old"


def test_numeric_strings_are_numbers(home, capsys):
    """cpu: "{{ n }}" with -e n=2 arrives as the string "2"."""
    result = run_module(maqet_vm, capsys, {"maqet_home": home,
                                           "definition": {"name": "n1", "cpu": "2",
                                                          "memory": "512"}})
    assert result["vm"]["spec"]["cpu"] == 2
    assert result["vm"]["spec"]["memory"] == 512 * 1024 * 1024


def test_bad_definition_fails_with_config_error(home, capsys):
    result = run_module(maqet_vm, capsys, {"maqet_home": home,
                                           "config": {"name": "u3", "cpu": -3}})
    assert result["failed"] and result["error_type"] == "ConfigError"
    assert result["msg"].startswith("cpu:")


def test_absent_of_a_definition_whose_files_are_gone_needs_only_its_name(home, capsys, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"")
    config = {"name": "u4", "kernel": str(kernel)}
    assert run_module(maqet_vm, capsys, {"maqet_home": home, "config": config})["changed"]
    kernel.unlink()
    result = run_module(maqet_vm, capsys, {"maqet_home": home, "config": config,
                                           "state": "absent"})
    assert result["changed"] and result["actions"] == [{"action": "remove"}]


def test_name_is_required_somewhere(home, capsys):
    result = run_module(maqet_vm, capsys, {"maqet_home": home, "state": "stopped"})
    assert result["failed"] and "one of the following is required" in result["msg"]


def test_a_start_that_fails_after_defining_says_changed(home, capsys, tmp_path):
    """The definition is stored, then QEMU cannot start (no such binary): the task fails
    with changed=true and the actions done, so the next run is not a surprise."""
    result = run_module(maqet_vm, capsys, {
        "maqet_home": home, "state": "running",
        "definition": {"name": "nobin", "binary": str(tmp_path / "no-such-qemu")}})
    assert result["failed"] and result["error_type"] == "QEMUNotFound"
    assert result["changed"] is True and result["actions"] == [{"action": "define"}]
    assert "not found" in result["msg"] and "maqet " not in result["msg"]


def test_every_task_returns_its_operation_id(home, capsys):
    """A made one (12 hex digits) unless the task gives one; the events it caused carry
    it; a failed task returns it too; a malformed one fails the task in one line."""
    made = run_module(maqet_vm, capsys, {"maqet_home": home, "definition": {"name": "o1"}})
    assert len(made["op_id"]) == 12 and int(made["op_id"], 16) >= 0
    given = run_module(maqet_vm, capsys, {"maqet_home": home, "name": "o1",
                                          "state": "absent", "op_id": "deploy-42"})
    assert given["op_id"] == "deploy-42"
    with patch_module_args({"maqet_home": home, "name": "o1", "state": "running",
                            "op_id": "deploy-43"}), pytest.raises(SystemExit):
        maqet_vm.main()
    failed = json.loads(capsys.readouterr().out)
    assert failed["failed"] and failed["op_id"] == "deploy-43"
    assert failed["error_type"] == "VMNotFound"
    bad = run_module(maqet_vm, capsys, {"maqet_home": home, "name": "o1", "op_id": "a b"})
    assert bad["failed"] and "operation id 'a b' is not valid" in bad["msg"]

    from maqet_engine import engine

    ctx = engine.EngineContext.for_home(home)
    trail = [(e["kind"], e["op_id"]) for e in engine.events(ctx, "o1").data]
    assert trail == [("defined", made["op_id"]), ("removed", "deploy-42")]


def test_info_returns_recent_events_of_each_vm(home, capsys):
    for name in ("e1", "e2"):
        run_module(maqet_vm, capsys, {"maqet_home": home, "definition": {"name": name}})
    bigger = {"name": "e1", "memory": "512M"}
    run_module(maqet_vm, capsys, {"maqet_home": home, "definition": bigger})
    none = run_module(maqet_vm_info, capsys, {"maqet_home": home, "name": "e1"})
    assert "events" not in none["vms"][0] and len(none["op_id"]) == 12
    info = run_module(maqet_vm_info, capsys, {"maqet_home": home, "events": 1})
    assert {vm["name"]: [e["kind"] for e in vm["events"]] for vm in info["vms"]} == {
        "e1": ["redefined"], "e2": ["defined"]}
    one = run_module(maqet_vm_info, capsys, {"maqet_home": home, "name": "e1", "events": 5})
    assert [e["kind"] for e in one["vms"][0]["events"]] == ["defined", "redefined"]
    assert set(one["vms"][0]["events"][0]) >= {"kind", "data", "time", "at", "op_id"}
    bad = run_module(maqet_vm_info, capsys, {"maqet_home": home, "events": -1})
    assert bad["failed"] and "events must not be negative" in bad["msg"]


def test_wait_applies_to_running_and_restarted_only(home, capsys):
    result = run_module(maqet_vm, capsys, {"maqet_home": home, "definition": {"name": "w1"},
                                           "state": "present", "wait": {"ssh": True}})
    assert result["failed"] and "wait applies to state running or restarted" in result["msg"]
    # Nothing asked for: no wait, whatever the state.
    result = run_module(maqet_vm, capsys, {"maqet_home": home, "definition": {"name": "w1"},
                                           "wait": {"timeout": 5}})
    assert result["changed"] and "wait" not in result


def test_check_mode_never_waits(home, capsys):
    result = run_module(maqet_vm, capsys, {"maqet_home": home, "definition": {"name": "w2"},
                                           "state": "running", "wait": {"ssh": True},
                                           "_ansible_check_mode": True})
    assert result["changed"] and "wait" not in result
    assert [a["action"] for a in result["actions"]] == ["define", "start"]


def test_console_needs_a_running_vm(home, capsys):
    assert run_module(maqet_vm, capsys, {"maqet_home": home, "definition": {"name": "c1"}})
    result = run_module(maqet_console, capsys, {"maqet_home": home, "vm": "c1",
                                                "text": "uname\n", "wait": "Linux"})
    assert result["failed"] and result["error_type"] == "StateConflict"
    result = run_module(maqet_console, capsys, {"maqet_home": home, "vm": "c1"})
    assert result["failed"] and "one of the following is required: text, wait" in result["msg"]
    result = run_module(maqet_console, capsys, {"maqet_home": home, "vm": "nosuch",
                                                "text": "x", "_ansible_check_mode": True})
    assert result["failed"] and result["error_type"] == "VMNotFound"
