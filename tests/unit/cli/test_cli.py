"""CLI behaviour: exit codes, --json shapes, idempotent add/apply/rm, no writes on reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from maqet_engine import __version__
from maqet_engine import constants as C
from maqet_engine.cli.main import main

MINIMAL = {"name": "vm1", "memory": "256M", "cpu": 1, "accel": "tcg", "tags": ["b", "a"]}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "vm.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"maqet {__version__}"


def test_ls_on_missing_home_creates_nothing(maqet_home: Path, capsys) -> None:
    code, out, _ = run(capsys, "ls")
    assert code == C.EXIT_OK and "no VMs defined" in out
    assert run_json(capsys, "ls") == (0, [])
    assert not maqet_home.exists()


def test_add_is_idempotent_and_refuses_a_different_definition(maqet_home, tmp_path, capsys):
    cfg = write_config(tmp_path, MINIMAL)
    code, out, _ = run(capsys, "add", "-c", str(cfg))
    assert (code, out.strip()) == (0, "vm1: changed (defined)")
    code, out, _ = run(capsys, "add", "-c", str(cfg))
    assert (code, out.strip()) == (0, "vm1: unchanged")
    code, out, err = run(capsys, "add", "-c", str(cfg), "--set", "memory=512M")
    assert code == C.EXIT_CONFLICT
    assert err.strip() == ("maqet: error: a VM named 'vm1' already exists with another "
                           "definition; apply the definition to change it, or pick another name")


def test_equivalent_definitions_are_unchanged(maqet_home, tmp_path, capsys):
    run(capsys, "add", "-c", str(write_config(tmp_path, MINIMAL)))
    same = dict(MINIMAL, memory="262144K", tags=["a", "b", "a"])
    code, data = run_json(capsys, "apply", "-c", str(write_config(tmp_path, same, "b.yml")))
    assert code == 0 and data["changed"] is False and data["actions"] == []


def test_apply_reports_changes_diff_and_check_mode(maqet_home, tmp_path, capsys):
    cfg = write_config(tmp_path, MINIMAL)
    code, data = run_json(capsys, "apply", "-c", str(cfg), "--check")
    assert (code, data["changed"], data["actions"]) == (0, True, [{"action": "define"}])
    assert not maqet_home.exists()  # check mode wrote nothing
    code, data = run_json(capsys, "apply", "-c", str(cfg))
    assert data["changed"] and data["diff"]["before"] is None
    assert data["vm"]["spec"]["memory"] == 256 * 1024 * 1024
    code, data = run_json(capsys, "apply", "-c", str(cfg))
    assert data["changed"] is False
    code, out, _ = run(capsys, "apply", "-c", str(cfg), "--set", "cpu=2", "--diff")
    assert "vm1: changed (redefined)" in out
    assert '-    "cpu": 1,' in out and '+    "cpu": 2,' in out
    code, data = run_json(capsys, "apply", "-c", str(cfg), "--state", "absent")
    assert (data["changed"], data["actions"]) == (True, [{"action": "remove"}])
    assert data["diff"] == {"before": {"status": "defined", "spec": data["diff"]["before"]["spec"]},
                            "after": None}
    code, data = run_json(capsys, "apply", "-c", str(cfg), "--state", "absent")
    assert (code, data["changed"]) == (0, False)


def test_ls_and_show(maqet_home, tmp_path, capsys):
    run(capsys, "add", "-c", str(write_config(tmp_path, MINIMAL)))
    code, out, _ = run(capsys, "ls")
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "CPUS", "MEMORY", "TAGS"]
    assert out.splitlines()[1].split() == ["vm1", "defined", "1", "256M", "a,b"]
    code, data = run_json(capsys, "ls")
    assert [vm["name"] for vm in data] == ["vm1"] and data[0]["status"] == "defined"
    code, data = run_json(capsys, "show", "vm1")
    assert data["spec"]["tags"] == ["a", "b"] and data["spec_hash"]
    code, out, _ = run(capsys, "show", "vm1")
    assert "status" in out and "defined" in out
    code, data = run_json(capsys, "show", "vm1", "--argv")
    assert data[0] == C.DEFAULT_BINARY and "-accel" in data and "tcg" in data


# A real ssh-keygen ed25519 key (tests/unit/cloudinit/conftest.py has more).
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBWHlnhseLcB6KFFD4MBTA4"


def shown(capsys: pytest.CaptureFixture[str], key: str) -> str:
    """The value of one line of ``maqet show vm1``."""
    _, out, _ = run(capsys, "show", "vm1")
    [value] = [line.split(None, 1)[1] for line in out.splitlines() if line.split()[0] == key]
    return value


def test_show_names_the_host_key_alias(maqet_home, tmp_path, capsys):
    """The alias a guest at an address of its own is checked under (ssh -o HostKeyAlias),
    shown beside the VM's known_hosts once the file holds it."""
    run(capsys, "add", "-c", str(write_config(tmp_path, MINIMAL)))
    _, data = run_json(capsys, "show", "vm1")
    known_hosts = Path(data["paths"]["dir"]) / C.KNOWN_HOSTS_FILE
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.write_text(f"[127.0.0.1]:40022 {HOST_KEY}\n")  # a runner of before the alias
    assert shown(capsys, "known_hosts") == str(known_hosts)
    known_hosts.write_text(f"[127.0.0.1]:40022,maqet-vm-vm1 {HOST_KEY}\n")
    assert shown(capsys, "known_hosts") == f"{known_hosts} (host key alias maqet-vm-vm1)"
    _, data = run_json(capsys, "show", "vm1")
    assert data["ssh"]["host_key_alias"] == "maqet-vm-vm1"


def test_rm(maqet_home, tmp_path, capsys):
    run(capsys, "add", "-c", str(write_config(tmp_path, MINIMAL)))
    code, out, _ = run(capsys, "rm", "vm1")
    assert (code, out.strip()) == (0, "vm1: changed (removed)")
    code, out, err = run(capsys, "rm", "vm1")
    assert code == C.EXIT_NOT_FOUND and "no VM named 'vm1'" in err
    code, out, _ = run(capsys, "rm", "vm1", "--missing-ok")
    assert (code, out.strip()) == (0, "vm1: absent")


def test_rm_purge_deletes_logs_but_keeps_user_files(maqet_home, tmp_path, capsys):
    run(capsys, "add", "-c", str(write_config(tmp_path, MINIMAL)))
    vm_dir = maqet_home / "data" / "vms" / "vm1"
    vm_dir.mkdir(parents=True)
    (vm_dir / "runner.log").write_text("x")
    (vm_dir / "mine.img").write_text("user data")
    code, data = run_json(capsys, "rm", "vm1", "--purge", "--check")
    assert (vm_dir / "runner.log").exists()
    assert data["actions"][-1] == {"action": "delete_file", "path": str(vm_dir / "runner.log")}
    code, data = run_json(capsys, "rm", "vm1", "--purge")
    assert code == 0 and data["actions"] == [
        {"action": "remove"}, {"action": "delete_file", "path": str(vm_dir / "runner.log")}]
    assert sorted(p.name for p in vm_dir.iterdir()) == ["mine.img"]


@pytest.mark.parametrize(
    ("argv", "code", "error_type"),
    [
        (["show", "nope"], C.EXIT_NOT_FOUND, "VMNotFound"),
        (["frobnicate"], C.EXIT_USAGE, "UsageError"),
        (["add"], C.EXIT_USAGE, "UsageError"),
        (["add", "-c", "/nonexistent/vm.yml"], C.EXIT_USAGE, "ConfigError"),
        (["apply", "--state", "running"], C.EXIT_USAGE, "UsageError"),
        (["apply", "--name", "x", "--state", "sideways"], C.EXIT_USAGE, "UsageError"),
    ],
)
def test_errors_have_exit_codes_and_json_shape(maqet_home, capsys, argv, code, error_type):
    got, data = run_json(capsys, *argv)
    assert got == code
    assert set(data) - {"op_id"} == {"error", "changed"} and data["changed"] is False
    # The command's operation id, once the command line parsed (maqet events --op ID).
    parsed = argv[0] != "frobnicate" and "sideways" not in argv  # argparse refused those
    assert ("op_id" in data) == parsed
    assert len(data.get("op_id", "x" * 12)) == 12
    assert data["error"]["type"] == error_type and data["error"]["exit_code"] == code
    assert "\n" not in data["error"]["message"]
    assert not maqet_home.exists()


def test_internal_errors_are_one_line_without_debug(maqet_home, capsys, monkeypatch):
    from maqet_engine.cli import definition_cmds

    def broken(*_: object) -> int:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(definition_cmds, "cmd_ls", broken)
    code, out, err = run(capsys, "ls")
    assert code == C.EXIT_INTERNAL
    assert err.strip() == ("maqet: error: internal error: ZeroDivisionError: boom; "
                           "rerun with --debug and report it")
    with pytest.raises(ZeroDivisionError):
        main(["ls", "--debug"])


def test_real_process_exit_codes_and_no_traceback(maqet_home, tmp_path):
    def maqet(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "maqet_engine", *argv],
                              capture_output=True, text=True, check=False)

    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\nmemroy: 1G\n")
    proc = maqet("add", "-c", str(bad))
    assert proc.returncode == C.EXIT_USAGE
    assert proc.stderr.count("\n") == 1 and "did you mean 'memory'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert maqet("show", "ghost").returncode == C.EXIT_NOT_FOUND
    assert not maqet_home.exists()


HEAVY_MODULES = ("asyncio", "qemu.qmp", "yaml", "maqet_engine.definition", "logging",
                 "dataclasses", "pycdlib")


@pytest.mark.parametrize("argv", [["--version"], ["ls"]])
def test_fast_commands_import_nothing_heavy(maqet_home, argv):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "maqet_engine", *argv],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & set(HEAVY_MODULES), imported & set(HEAVY_MODULES)


def test_a_failed_start_after_defining_reports_the_change(maqet_home, tmp_path, capsys):
    cfg = write_config(tmp_path, dict(MINIMAL, binary=str(tmp_path / "no-such-qemu")))
    code, data = run_json(capsys, "apply", "-d", str(cfg), "--state", "running")
    assert code == C.EXIT_HOST and data["error"]["type"] == "QEMUNotFound"
    assert data["changed"] is True and data["result"]["actions"] == [{"action": "define"}]
    code, out, err = run(capsys, "show", "vm1")
    assert code == 0 and "defined" in out
    code, out, err = run(capsys, "start", "vm1")
    assert code == C.EXIT_HOST and "(changed before the error" not in err
    assert err.startswith("maqet: error: QEMU binary ") and err.count("\n") == 1


def test_an_unanswering_guest_agent_is_exit_7(maqet_home, capsys, monkeypatch):
    """AgentUnavailable has its own exit code, in the usual one-line and JSON shapes."""
    from maqet_engine.engine import guest
    from maqet_engine.errors import AgentUnavailable

    def no_agent(*_: object, **__: object) -> None:
        raise AgentUnavailable("no guest agent answered guest-exec within 30 s: qemu-ga is "
                               "not running in the guest")

    monkeypatch.setattr(guest, "guest_exec", no_agent)
    code, out, err = run(capsys, "exec", "-n", "vm1", "--", "true")
    assert code == C.EXIT_AGENT == 7 and out == ""
    assert err == ("maqet: error: no guest agent answered guest-exec within 30 s: qemu-ga is "
                   "not running in the guest\n")
    code, out, _ = run(capsys, "--json", "exec", "-n", "vm1", "--", "true")
    data = json.loads(out)
    assert code == 7 and data["error"]["type"] == "AgentUnavailable"
