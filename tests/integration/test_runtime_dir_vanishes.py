"""A runtime directory removed under a live VM (tmp cleaners; logind removes
XDG_RUNTIME_DIR at logout) does not orphan it: the next command regains control of
the same runner and QEMU, and the VM still stops gracefully. Real QEMU, real guest,
the real CLI."""

from __future__ import annotations

import json
import shutil

import pytest
from guest import wait_marker
from procs import wait_pid_exit

from maqet_engine import constants as C
from maqet_engine.cli.main import main

pytestmark = pytest.mark.qemu


def cli(capsys, *argv: str) -> tuple[int, object]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_rm_rf_of_the_runtime_dir_loses_nothing(vms, capsys):
    name = vms.define()
    assert cli(capsys, "start", name)[0] == C.EXIT_OK
    wait_marker(vms.paths, name)
    before = vms.record(name)

    shutil.rmtree(vms.paths.runtime)

    code, status = cli(capsys, "status", name)
    assert code == C.EXIT_OK, status
    assert (status["status"], status["qmp_status"], status["runner_alive"]) == (
        "running", "running", True)
    assert status["runner_pid"] == before.runner_pid and status["qemu_pid"] == before.qemu_pid
    code, reply = cli(capsys, "qmp", name, "query-status")
    assert code == C.EXIT_OK and reply["status"] == "running", reply
    code, started = cli(capsys, "start", name)
    assert code == C.EXIT_OK and started["changed"] is False  # the same runner, no other
    code, stopped = cli(capsys, "stop", name)
    assert code == C.EXIT_OK, stopped
    (action,) = stopped["actions"]
    assert (action["rung"], action["status"]) == ("powerdown", "stopped")  # graceful
    assert wait_pid_exit(before.runner_pid) and wait_pid_exit(before.qemu_pid)
    with vms.store() as store:
        kinds = [e.kind for e in store.events(name, limit=100)]
    assert "adopted" not in kinds and "crashed" not in kinds  # nothing was lost or redone
    assert kinds[-1] == "stopped"
    assert not vms.our_pids()
