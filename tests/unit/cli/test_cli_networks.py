"""``maqet network``: add/apply/ls/show/rm, exit codes, --json shapes, a VM's networks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from maqet_engine import constants as C
from maqet_engine.cli.main import main
from maqet_engine.cli.network_cmds import NETWORK_STATES


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def test_states_match_the_engine():
    from maqet_engine.engine import NETWORK_STATES as ENGINE_STATES

    assert NETWORK_STATES == ENGINE_STATES


def test_add_ls_show_rm(maqet_home: Path, capsys):
    code, out, _ = run(capsys, "network", "ls")
    assert code == 0 and "no networks defined" in out and not maqet_home.exists()
    assert run(capsys, "network", "add", "lab", "--type", "segment")[1].strip() == \
        "network lab: changed (defined network)"
    assert run(capsys, "network", "add", "lab", "--type", "segment")[1].strip() == \
        "network lab: unchanged"
    code, _, err = run(capsys, "network", "add", "lab", "--type", "segment", "--ttl", "2")
    assert code == C.EXIT_CONFLICT and "already exists with another definition" in err
    code, out, _ = run(capsys, "network", "add", "wire", "--type", "link",
                       "--end-a", "127.0.0.1:31000")
    assert code == 0
    code, views = run_json(capsys, "network", "ls")
    assert [(v["name"], v["type"]) for v in views] == [("lab", "segment"), ("wire", "link")]
    assert views[1]["spec"]["a"] == "127.0.0.1:31000"
    assert views[1]["endpoints"] == ["127.0.0.1:31000", views[1]["spec"]["b"]]
    code, out, _ = run(capsys, "network", "ls")
    assert out.splitlines()[0].split() == ["NAME", "TYPE", "WHERE", "VMS"]
    code, out, _ = run(capsys, "network", "show", "lab")
    assert "interface  lo" in out and "ttl        1" in out
    code, out, err = run(capsys, "network", "show", "nope")
    assert code == C.EXIT_NOT_FOUND and "no network named 'nope'" in err
    code, data = run_json(capsys, "network", "rm", "wire", "--check")
    assert data["actions"] == [{"action": "remove_network"}]
    assert run(capsys, "network", "rm", "wire")[1].strip() == \
        "network wire: changed (removed network)"
    assert run(capsys, "network", "rm", "wire")[0] == C.EXIT_NOT_FOUND
    assert run(capsys, "network", "rm", "wire", "--missing-ok")[1].strip() == \
        "network wire: absent"


def test_apply_check_diff_and_definition_files(maqet_home: Path, tmp_path: Path, capsys):
    definition = tmp_path / "lab.yml"
    definition.write_text(yaml.safe_dump({"name": "lab", "type": "segment", "ttl": 1}))
    code, data = run_json(capsys, "network", "apply", "-d", str(definition), "--check")
    assert (code, data["changed"]) == (0, True) and not maqet_home.exists()
    assert len(data["op_id"]) == 12  # each network command is an operation, as every other
    assert run_json(capsys, "network", "apply", "-d", str(definition))[1]["changed"]
    code, out, _ = run(capsys, "network", "apply", "-d", str(definition), "--ttl", "3",
                       "--diff")
    assert "network lab: changed (redefined network)" in out
    assert '-    "ttl": 1,' in out and '+    "ttl": 3,' in out
    code, data = run_json(capsys, "network", "apply", "lab", "--state", "absent")
    assert data["changed"] and data["diff"]["before"]["spec"]["ttl"] == 3
    code, _, err = run(capsys, "network", "add")
    assert code == C.EXIT_USAGE and "needs a NAME" in err
    code, _, err = run(capsys, "network", "add", "x", "--type", "segment", "--port", "80")
    assert code == C.EXIT_USAGE and "port: 80 is out of range" in err


def test_rm_in_use_names_the_vms_and_show_lists_nics(maqet_home: Path, tmp_path: Path, capsys):
    run(capsys, "network", "add", "lab", "--type", "segment")
    vm = tmp_path / "vm.yml"
    vm.write_text(yaml.safe_dump({"name": "web", "accel": "tcg", "network": [
        {"type": "user"}, {"network": "lab"}]}))
    assert run(capsys, "add", "-d", str(vm))[0] == 0
    code, out, err = run(capsys, "network", "rm", "lab")
    assert code == C.EXIT_CONFLICT
    assert err.strip() == ("maqet: error: network 'lab' is used by VM(s) web; remove those "
                           "VMs, or change their definitions to another network, first")
    code, data = run_json(capsys, "network", "rm", "lab")
    assert data["error"]["type"] == "NetworkInUse" and data["error"]["vms"] == ["web"]
    code, view = run_json(capsys, "show", "web")
    mac = view["networks"][1]["mac"]
    assert view["networks"][1]["network"] == "lab" and mac.startswith("52:54:00:")
    code, out, _ = run(capsys, "show", "web")
    assert f"user, lab (segment, {mac})" in out
    code, out, _ = run(capsys, "network", "show", "lab")
    assert f"vm web     {mac}, NIC 1, defined" in out
    code, _, err = run(capsys, "add", "-d", str(vm), "--name", "web2", "--set",
                       f"network.1.mac={mac}")
    assert code == C.EXIT_CONFLICT and "already used on network 'lab' by VM 'web'" in err
