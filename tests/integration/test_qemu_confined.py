"""Root's QEMU is confined: it drops to the unprivileged ``maqet-qemu`` user after
start-up (``-runas``) and runs under seccomp (``-sandbox``), and still boots the real
guest, snapshots its qcow2 disk (opened before the drop), dumps its screen (an fd the
runner opened) and powers down gracefully. A root maqet without that user refuses to
start QEMU, unless ``MAQET_QEMU_USER=root`` opts out."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from guest import wait_marker

from maqet_engine import constants as C
from maqet_engine import engine
from maqet_engine.errors import QEMUUserMissing

pytestmark = pytest.mark.qemu


@pytest.fixture(autouse=True)
def _root_only():
    if os.geteuid() != 0:
        pytest.skip("-runas is root's")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_root_qemu_runs_as_maqet_qemu_under_seccomp_and_still_works(vms, tmp_path):
    qemu_user = pwd.getpwnam(C.DEFAULT_QEMU_USER)
    name = vms.define(storage=[{"name": "hdd", "type": "qcow2", "size": "16M"}])
    ctx = vms.ctx()
    assert [a["action"] for a in engine.start(ctx, name).actions] == ["create_disk", "start"]
    wait_marker(vms.paths, name)  # the guest booted to its marker
    record = vms.record(name)
    status = proc_status(record.qemu_pid)
    assert status["Uid"].split() == [str(qemu_user.pw_uid)] * 4  # real, effective, saved, fs
    assert status["Gid"].split() == [str(qemu_user.pw_gid)] * 4
    assert status["Seccomp"] == "2" and int(status["CapEff"], 16) == 0
    argv = engine.show(ctx, name).data["argv"]
    assert argv[argv.index("-runas") + 1] == C.DEFAULT_QEMU_USER
    assert "spawn=deny" in argv[argv.index("-sandbox") + 1]

    # The qcow2 disk was opened as root before the drop: live snapshots still work.
    created = engine.snapshot(ctx, name, "s1", timeout=60)
    assert created.changed and [s["name"] for s in created.data["snapshots"]] == ["s1"]
    # QEMU (maqet-qemu) cannot create files in root's 0700 directories: the runner
    # opens the screendump and hands it the fd.
    shot = tmp_path / "screen.png"
    engine.screendump(ctx, name, shot)
    assert shot.read_bytes().startswith(b"\x89PNG")

    result = engine.stop(ctx, name, timeout=30)
    assert result.actions[0]["rung"] == "powerdown" and result.after["status"] == "stopped"


def test_opting_out_runs_qemu_as_root_still_sandboxed(vms, monkeypatch):
    monkeypatch.setenv(C.ENV_QEMU_USER, "root")
    name = vms.define()
    ctx = vms.ctx()
    engine.start(ctx, name)
    status = proc_status(vms.record(name).qemu_pid)
    assert status["Uid"].split()[0] == "0" and status["Seccomp"] == "2"
    assert "-runas" not in engine.show(ctx, name).data["argv"]
    wait_marker(vms.paths, name)
    assert engine.stop(ctx, name, timeout=30).actions[0]["rung"] == "powerdown"


def test_root_without_the_qemu_user_refuses_to_start(vms, monkeypatch):
    monkeypatch.setenv(C.ENV_QEMU_USER, "maqet-test-no-such-user")
    name = vms.define()
    with pytest.raises(QEMUUserMissing) as info:
        engine.start(vms.ctx(), name)
    assert str(info.value) == (
        "maqet runs as root and the user 'maqet-test-no-such-user' that QEMU drops to does "
        "not exist; create it (useradd --system --no-create-home maqet-test-no-such-user), "
        "or set MAQET_QEMU_USER=root to run QEMU as root (see docs/security.md)")
    assert info.value.exit_code == C.EXIT_HOST
    assert not vms.our_pids()
