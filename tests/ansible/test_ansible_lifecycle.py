"""maqet_vm running/stopped/restarted and maqet_qmp against real QEMU and the tiny
guest (TCG), through real ansible-playbook runs."""

from __future__ import annotations

import pytest
from ansible_helpers import guest_definition

pytestmark = [pytest.mark.ansible, pytest.mark.qemu]

SERIAL_TIMEOUT = 20.0  # a shell command's output on the serial console: ~0.1 s


def give_keyboard_a_shell(home, name: str) -> None:
    """Start a shell on the keyboard's VT (tty1) whose output goes to the serial
    console, so that keys typed through QMP can be read back in serial.log. Test
    plumbing through the engine (no module writes to the serial port)."""
    from maqet_engine import lifecycle
    from maqet_engine.paths import resolve_paths
    from maqet_engine.state import Store

    paths = resolve_paths({"MAQET_HOME": str(home)})
    with Store.open(paths.db, create=False) as store:
        def call(method: str, **params):
            return lifecycle.call(paths, store, name, method, **params)

        call("serial_write", text="(PS1=vt$((0+1))@ setsid sh -c "
                                  "'exec sh -i </dev/tty1 >/dev/ttyS0 2>&1' &)\n")
        call("serial_wait", pattern="vt1@", since=0, timeout=SERIAL_TIMEOUT,
             ipc_timeout=SERIAL_TIMEOUT + 5)


def test_running_qmp_stopped_four_ways(sandbox, guest_ready, tmp_path):
    guest = guest_definition("e2e1")
    shots = tmp_path / "shots"
    shots.mkdir()
    run = sandbox.playbook("running.yml", extra_vars={"guest": guest}, args=("--diff",))
    assert run.rc == 0, run.explain()

    give_keyboard_a_shell(sandbox.home, guest["name"])
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
