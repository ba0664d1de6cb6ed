"""End to end: guests from an image, reached over SSH from one playbook, with host key
checking on (playbooks/guests_e2e.yml). The ssh guest's disk image is served over HTTP on
127.0.0.1; root's key comes from the cloud_init seed; each VM's SSH forward is on an auto
port; maqet writes each guest's known_hosts from its console; the inventory plugin hands
Ansible the port, user, key and known_hosts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import guest
import image_server  # tests/support
import pytest

pytestmark = [pytest.mark.ansible, pytest.mark.qemu]

NAMES = ["e2e1", "e2e2"]
IMAGE_SIZE = 32 * 1024 * 1024


def qcow2_image(tmp_path: Path) -> bytes:
    return image_server.qcow2_image(tmp_path, b"MAQET-E2E-IMAGE", IMAGE_SIZE)


def test_guests_from_an_image_reached_over_ssh(sandbox, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    for variable in image_server.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        sandbox.env.pop(variable, None)
    files = guest.ensure_ssh_guest()
    keys = guest.make_ssh_keypair(tmp_path)
    root = tmp_path / "www"
    root.mkdir()
    data = qcow2_image(tmp_path)
    (root / "disk.qcow2").write_bytes(data)
    plugin_config = sandbox.root / "guests.maqet.yml"
    plugin_config.write_text(f"plugin: maqet.vm.maqet\nmaqet_home: {sandbox.home}\n")
    with image_server.serve(root) as server:
        variables = {
            "names": NAMES, "image": server.url("disk.qcow2"),
            "checksum": f"sha256:{hashlib.sha256(data).hexdigest()}",
            "kernel": str(files.kernel), "initrd": str(files.initrd),
            "accel": guest.test_accel(), "public_key": keys.public_line,
            "private_key": str(keys.private_key)}
        inventory = ("-i", str(plugin_config))

        # Plays 1 and 2: create and wait, refresh, then facts, a file, a command inside.
        run = sandbox.playbook("guests_e2e.yml", extra_vars=variables,
                               args=(*inventory, "--skip-tags", "teardown"))
        assert run.rc == 0, run.explain()
        assert run.recap("localhost")["changed"] == 1  # one task, a loop over both VMs
        for name in NAMES:
            assert run.recap(name)["failed"] == 0 and run.recap(name)["changed"] == 1
        assert server.count("/disk.qcow2") == 1  # the second VM used the cached image

        # Play 1 again: nothing to do, the guests answer at once.
        again = sandbox.playbook("guests_e2e.yml", extra_vars=variables,
                                 args=(*inventory, "--tags", "create"))
        assert again.rc == 0, again.explain()
        assert again.recap("localhost")["changed"] == 0

        # Play 3: gone.
        gone = sandbox.playbook("guests_e2e.yml", extra_vars=variables,
                                args=(*inventory, "--tags", "teardown"))
        assert gone.rc == 0, gone.explain()
        assert gone.recap("localhost")["changed"] == 1
    assert not sandbox.our_pids()
    assert not (sandbox.home / "data" / "vms" / NAMES[0]).exists()
