"""maqet_vm running/stopped/restarted and maqet_qmp against real QEMU and the tiny
guest (TCG), through real ansible-playbook runs."""

from __future__ import annotations

import pytest
from ansible_helpers import guest_definition

pytestmark = [pytest.mark.ansible, pytest.mark.qemu]


def test_running_qmp_stopped_four_ways(sandbox, guest_ready, tmp_path):
    guest = guest_definition("e2e1")
    shots = tmp_path / "shots"
    shots.mkdir()
    run = sandbox.playbook("running.yml", extra_vars={"guest": guest}, args=("--diff",))
    assert run.rc == 0, run.explain()

    run = sandbox.playbook("qmp.yml", extra_vars={"guest": guest, "shots": str(shots)})
    assert run.rc == 0, run.explain()
    assert (shots / "screen.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    run = sandbox.playbook("stopped.yml", extra_vars={"guest": guest})
    assert run.rc == 0, run.explain()
    assert not sandbox.our_pids()


def test_snapshots_live_and_offline(sandbox, guest_ready):
    # A disk maqet creates on the first start (size given, file missing).
    guest = guest_definition("snap1", storage=[{"name": "root", "type": "qcow2",
                                                "size": "16M"}])
    run = sandbox.playbook("snapshots.yml", extra_vars={"guest": guest})
    assert run.rc == 0, run.explain()
    assert not sandbox.our_pids()


def test_op_ids_and_events_from_a_play(sandbox):
    """A firmware-only VM (no guest needed): see playbooks/observe.yml."""
    run = sandbox.playbook("observe.yml", extra_vars={"play_op": "play-14"})
    assert run.rc == 0, run.explain()
    assert not sandbox.our_pids()
