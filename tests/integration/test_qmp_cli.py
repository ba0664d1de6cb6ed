"""The runtime commands through the real ``maqet`` CLI (subprocesses, real QEMU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from maqet_engine import constants as C

pytestmark = pytest.mark.qemu


def maqet(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maqet_engine", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=os.environ.copy())


def test_cli_runtime_commands(vms, tmp_path):
    name = vms.define()
    first = maqet("start", name)
    assert first.returncode == 0 and first.stdout.strip() == f"{name}: started", first.stderr
    again = maqet("start", name)
    assert again.returncode == 0 and "already running" in again.stdout

    ok = maqet("qmp", name, "query-status")
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "running"
    args = maqet("qmp", name, "qom-get", "path=/machine", "property=type")
    assert args.returncode == 0 and "q35" in json.loads(args.stdout)
    failed = maqet("--json", "qmp", name, "device_del", "--args", '{"id": "nothing"}')
    assert failed.returncode == C.EXIT_RUNTIME
    assert json.loads(failed.stdout)["error"]["error_class"] == "DeviceNotFound"
    failed = maqet("qmp", name, "no-such-command")
    assert failed.returncode == C.EXIT_RUNTIME and "CommandNotFound" in failed.stderr

    shot = maqet("screendump", name, "shot.png", cwd=str(tmp_path))  # the caller's cwd
    assert shot.returncode == 0, shot.stderr
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    status = json.loads(maqet("--json", "status", name).stdout)
    assert status["status"] == "running" and status["runner_alive"] and status["accel"] == "tcg"

    stop = maqet("stop", name, "--force")
    assert stop.returncode == 0 and stop.stdout.startswith(f"{name}: stopped (QMP quit")
    assert "already stopped" in maqet("stop", name).stdout
    assert maqet("qmp", name, "query-status").returncode == C.EXIT_CONFLICT
    logs = maqet("logs", name, "--runner")
    assert logs.returncode == 0 and "runner started" in logs.stdout
