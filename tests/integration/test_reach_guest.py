"""Reaching a guest, end to end with real QEMU and the ssh guest (dropbear, root's key from
the ``cloud_init`` seed): ``host: auto`` forwards get a free port that the runner reads
back from QEMU; the runner turns the host keys the guest prints into the VM's known_hosts;
``wait_ssh`` returns once both are there; real ``ssh`` then logs in with host key checking
on; console waits and reads count from this boot; a reset is a new boot; a new cloud-init
instance forgets the old keys.

The ssh guest boots in ~3 s under TCG, prints its host keys at *every* boot (cloud-init
does once per instance) and makes a new host key at every boot.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from functools import partial
from typing import Any

import guest
import maqetcli
import pytest

from maqet_engine import engine
from maqet_engine.engine import lifecycle
from maqet_engine.errors import StateConflict, UsageError

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 120.0  # seconds to an SSH-able ssh guest; ~3 s under TCG here
SSH_TIMEOUT = 60.0  # one ssh command; ~0.3 s here
CLI_TIMEOUT = 180.0

maqet_json = partial(maqetcli.maqet_json, timeout=CLI_TIMEOUT)


def ssh_vm(name: str, public_key: str, **more: Any) -> dict[str, Any]:
    """The ssh guest with root's key only from the seed, SSH on an auto port, and two more
    forwards (a fixed one and an auto one) to show how ports are matched. Without
    -no-reboot, so that a QMP system_reset is a reset (a new boot), not an exit."""
    files = guest.ensure_ssh_guest()
    return {
        "name": name, "accel": guest.test_accel(), "machine": "q35", "memory": "256M",
        "kernel": str(files.kernel), "initrd": str(files.initrd),
        "append": guest.SSH_GUEST_APPEND,
        "cloud_init": {"users": [{"name": "root", "ssh_authorized_keys": [public_key]}]},
        "network": [{"type": "user", "forward": [
            {"host": "auto", "guest": 22},
            {"host": "auto", "guest": 80, "host_address": "0.0.0.0"}]}],
        "arguments": ["-device", "virtio-rng-pci"],
        **more,
    }


def ssh(keys: Any, known_hosts: str, port: int, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("ssh") or "ssh", *guest.ssh_options(keys.private_key, known_hosts),
         "-p", str(port), "root@127.0.0.1", command],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=SSH_TIMEOUT,
        check=False)


def events(vms: Any, name: str, kind: str) -> list[dict[str, Any]]:
    with vms.store() as store:
        return [e.data for e in store.events(name, limit=200) if e.kind == kind]


def test_auto_ports_known_hosts_and_wait_ssh(vms, tmp_path):
    ctx = vms.ctx()
    keys = guest.make_ssh_keypair(tmp_path)
    spec = engine.load_definition(ctx, definition=ssh_vm("reach1", keys.public_line))
    vms.names.append("reach1")
    assert engine.apply(ctx, spec=spec, state="running").changed

    # The ports QEMU bound: real numbers for the auto forwards, recorded at start.
    view = engine.show(ctx, "reach1").data
    web, ssh_port = view["ports"]  # sorted by address: 0.0.0.0 first
    assert ssh_port["auto"] and web["auto"] and ssh_port["guest"] == 22
    assert isinstance(ssh_port["host"], int) and isinstance(web["host"], int)
    assert ssh_port["host"] != web["host"]
    assert web["host_address"] == "0.0.0.0"
    assert view["spec"]["network"][0]["forward"][0]["host"] == "auto"  # the spec keeps it
    assert view["ssh"]["port"] == ssh_port["host"] and view["ssh"]["user"] == "root"

    # wait_ssh: the keys (a cloud_init VM without known_hosts yet), then the banner.
    reached = engine.wait_ssh(ctx, "reach1", timeout=BOOT_TIMEOUT).data
    assert reached["banner"].startswith("SSH-2.0-dropbear")
    assert (reached["host"], reached["port"]) == ("127.0.0.1", ssh_port["host"])
    known_hosts = vms.paths.vm_data("reach1").known_hosts
    assert reached["known_hosts"] == str(known_hosts)
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    [line] = known_hosts.read_text().splitlines()
    # The forward's name and the VM's host key alias (for a guest reached at its own
    # address: ssh -o HostKeyAlias=maqet-vm-reach1).
    assert line.startswith(f"[127.0.0.1]:{ssh_port['host']},maqet-vm-reach1 ssh-ed25519 ")
    assert reached["host_keys"] == [line.split(" ", 1)[1]]
    assert events(vms, "reach1", "host_keys")[-1]["boot"] == 1

    # Real ssh, host key checking on, with nothing but maqet's known_hosts.
    login = ssh(keys, str(known_hosts), reached["port"], "hostname")
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "reach1"

    # The CLI shows the same: ports with the real port, known_hosts; wait --ssh.
    shown = maqet_json("show", "reach1")
    assert shown["ports"][1]["host"] == ssh_port["host"] and shown["ports"][1]["auto"]
    status = maqet_json("status", "reach1")
    assert status["ports"] == shown["ports"] and status["known_hosts"] == str(known_hosts)
    waited = maqet_json("wait", "reach1", "--ssh", "--timeout", "60")
    assert waited["ssh"]["port"] == ssh_port["host"]

    # The console, counted from this boot: write, wait for the answer, read in between.
    marker_at = engine.wait_console(ctx, "reach1", guest.SSH_GUEST_MARKER).data["offset"]
    written = engine.write_console(ctx, "reach1", "echo hello-$((6*7))\n").data
    assert written["offset"] >= marker_at
    found = engine.wait_console(ctx, "reach1", r"^hello-42$", since=written["offset"]).data
    between = engine.read_console(ctx, "reach1", since=written["offset"],
                                  until=found["offset"]).data
    # The wait may match the answer's line before its line end arrives (prompts have
    # none), so the text read up to the match ends with the answer, line end or not.
    assert "hello-42" in between["text"].splitlines() and "\x1b" not in between["text"]
    assert (between["since"], between["until"]) == (written["offset"], found["offset"])

    # A reset is a new boot: waits count from it, the old marker no longer satisfies one,
    # and the new host key the guest makes replaces the old one in known_hosts.
    engine.qmp(ctx, "reach1", "system_reset")
    with vms.store() as store:
        report = lifecycle.call(vms.paths, store, "reach1", "host_keys",
                                timeout=BOOT_TIMEOUT, ipc_timeout=BOOT_TIMEOUT + 30)
    assert report["boot"] == 2 and report["this_boot"]
    assert report["boot_offset"] > found["offset"]
    again = engine.wait_console(ctx, "reach1", guest.SSH_GUEST_MARKER).data
    assert again["offset"] > report["boot_offset"]
    [new_line] = known_hosts.read_text().splitlines()
    assert new_line != line and new_line.startswith(
        f"[127.0.0.1]:{ssh_port['host']},maqet-vm-reach1 ")
    assert events(vms, "reach1", "RESET")[-1]["console_offset"] == report["boot_offset"]
    login = ssh(keys, str(known_hosts), ssh_port["host"], "true")
    assert login.returncode == 0, login.stderr

    # Stopped: no bound ports (auto has none), the keys stay; the next start names them
    # under its own port at once (before the guest prints anything).
    engine.stop(ctx, "reach1", force=True)
    stopped = engine.show(ctx, "reach1").data
    assert [p["host"] for p in stopped["ports"]] == [None, None]
    assert vms.record("reach1").ports_json is None
    assert stopped["known_hosts"] == str(known_hosts)
    with pytest.raises(StateConflict):
        engine.wait_ssh(ctx, "reach1", timeout=5)
    engine.start(ctx, "reach1")
    port = engine.show(ctx, "reach1").data["ssh"]["port"]
    assert known_hosts.read_text().startswith(f"[127.0.0.1]:{port},maqet-vm-reach1 "
                                              "ssh-ed25519 ")
    assert engine.show(ctx, "reach1").data["ssh"]["host_key_alias"] == "maqet-vm-reach1"

    # A changed cloud_init is a new instance: its old keys are deleted with the new seed,
    # and wait_ssh waits for the ones the new boot prints.
    changed = engine.load_definition(ctx, definition=ssh_vm(
        "reach1", keys.public_line, cloud_init={
            "hostname": "renamed",
            "users": [{"name": "root", "ssh_authorized_keys": [keys.public_line]}]}))
    result = engine.apply(ctx, spec=changed, state="running", recreate=True, force=True)
    assert {"action": "delete_file", "path": str(known_hosts)} in result.actions
    reached = engine.wait_ssh(ctx, "reach1", timeout=BOOT_TIMEOUT).data
    assert reached["known_hosts"] == str(known_hosts)
    login = ssh(keys, str(known_hosts), reached["port"], "hostname")
    assert login.returncode == 0 and login.stdout.strip() == "renamed", login.stderr


def test_wait_ssh_needs_an_ssh_forward(vms):
    ctx = vms.ctx()
    name = vms.define("noforward")
    engine.start(ctx, name)
    with pytest.raises(UsageError, match="no user-net forward to its SSH port 22"):
        engine.wait_ssh(ctx, name, timeout=5)
    assert engine.show(ctx, name).data["known_hosts"] is None
