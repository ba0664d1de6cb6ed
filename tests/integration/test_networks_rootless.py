"""Segments need no privileges: an unprivileged user (tests/support/users.py) runs two
VMs on a segment with TTL 2 (set on QEMU's socket by a runner that is not root) and
they ping each other; a bridged network is refused to that user in one line (exit 6),
with no tap device made.

The user cannot read root's guest cache or the project's virtualenv interpreter: the
guest files are copied for it, and it runs the system python with this worktree, the
test helpers and the virtualenv's pure-Python packages (qemu.qmp, PyYAML) importable.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import guest
import pytest
from guestnet import Sniffer
from users import SYSTEM_PYTHON, VICTIM, ensure_user

from maqet_engine import hostnet

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parents[2]
SCENARIO_TIMEOUT = 300.0  # two boots and a few pings under TCG: ~15 s

SCENARIO = r"""
import json, sys
import guest
from guestnet import GuestShell
from maqet_engine import engine
from maqet_engine.errors import MaqetError

args = json.loads(sys.argv[1])
ctx = engine.EngineContext.from_env()
engine.apply_network(ctx, engine.load_network(ctx, definition={
    "name": args["network"], "type": "segment", "ttl": 2}))
files = guest.GuestFiles(kernel=args["kernel"], initrd=args["initrd"])
shells = []
for index in (1, 2):
    name = f"u{index}"
    spec = engine.load_definition(ctx, definition=guest.guest_definition(
        name, files, network=[{"network": args["network"]}]))
    engine.apply(ctx, spec=spec, state="running")
    shells.append(GuestShell(ctx, name))
for index, shell in enumerate(shells, start=1):
    shell.wait_ready()
    shell.configure(f"10.250.5.{index}/24")
result = {"ping": shells[0].ping("10.250.5.2") and shells[1].ping("10.250.5.1"),
          "runs_as": [engine.status(ctx, s.name).data["qemu_pid"] for s in shells]}
for shell in shells:
    engine.stop(ctx, shell.name, force=True)
engine.apply_network(ctx, engine.load_network(ctx, definition={
    "name": args["network"] + "-br", "type": "bridged", "bridge": args["bridge"]}))
spec = engine.load_definition(ctx, definition=guest.guest_definition(
    "u3", files, network=[{"network": args["network"] + "-br"}]))
try:
    engine.apply(ctx, spec=spec, state="running")
    result["bridged"] = None
except MaqetError as err:
    result["bridged"] = [type(err).__name__, err.exit_code, str(err)]
result["tap"] = engine.show(ctx, "u3").data["networks"][0]["tap"]
print("RESULT " + json.dumps(result))
"""


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory the unprivileged user can reach (pytest's tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="maqet-rootless-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_unprivileged_user_runs_a_segment_but_not_a_bridge(scratch: Path):
    user = ensure_user(VICTIM)
    files = guest.ensure_guest()
    for source in (files.kernel, files.initrd):
        shutil.copy(source, scratch / source.name)
        (scratch / source.name).chmod(0o644)
    home = scratch / "home"
    home.mkdir()
    os.chown(home, user.uid, user.gid)
    suffix = secrets.token_hex(2)
    bridge = f"mqtb{suffix}"
    network = f"ulab-{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    site = sysconfig.get_paths()["purelib"]
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent",
           "MAQET_HOME": str(home), "MAQET_TEST_ACCEL": guest.test_accel(),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests" / "support"),
                                          str(REPO / "tests" / "guest"), site])}
    args = {"network": network, "bridge": bridge, "kernel": str(scratch / files.kernel.name),
            "initrd": str(scratch / files.initrd.name)}
    try:
        from maqet_engine.definition.netspec import derived_segment

        group, port = derived_segment(network)
        with Sniffer("lo", group, port) as on_lo:
            proc = subprocess.run(
                ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
                 "--", SYSTEM_PYTHON, "-P", "-c", SCENARIO, json.dumps(args)],
                env=env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT, cwd="/")
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        result = json.loads(lines[-1][len("RESULT "):])
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
        from procs import kill_mentioning

        kill_mentioning(home)
    assert result["ping"], "the unprivileged user's VMs cannot reach each other"
    assert on_lo.capture.packets > 0 and on_lo.capture.ttls == {2}
    kind, code, message = result["bridged"]
    assert (kind, code) == ("HostError", 6), message
    assert "bridged networks need root" in message
    assert not hostnet.interface_exists(result["tap"])
