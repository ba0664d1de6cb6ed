"""The cloud image (Debian 12 + real cloud-init) under raw QEMU, no maqet code: a NoCloud seed
makes a user with our key and sets the hostname, cloud-init prints the host keys on the
console, SSH works with host key checking on, qemu-ga answers, ACPI powers it off.

Real cloud-init under TCG takes ~35 s to reach SSH here, so this is one test that checks
everything in one boot.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import guest
import pytest

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 300.0  # seconds to the host key block; ~35 s under TCG here
FINISH_TIMEOUT = 120.0  # host keys -> "Cloud-init ... finished"; ~1 s here
SSH_TIMEOUT = 60.0
QGA_TIMEOUT = 120.0
EXIT_TIMEOUT = 120.0  # system_powerdown -> QEMU gone (systemd shutdown); ~2-3 s here
FINISHED = re.compile(r"Cloud-init v\. \S+ finished at [^\n]*\n")

USER_DATA = """\
#cloud-config
hostname: maqet-cloud-test
users:
  - name: tester
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    ssh_authorized_keys:
      - {key}
"""
META_DATA = "instance-id: iid-maqet-cloud-test\nlocal-hostname: from-meta-data\n"


@pytest.fixture
def qemus(tmp_path: Path) -> Iterator[guest.RawQemu]:
    """Starts the VM; kills it by PID and removes its sockets at teardown."""
    with guest.RawQemu(tmp_path, prefix="maqet-cloud-") as qemus:
        yield qemus


def test_cloud_image_applies_nocloud_seed_and_serves_ssh(tmp_path, qemus):
    image = guest.ensure_cloud_image()
    key = guest.make_ssh_keypair(tmp_path)
    # The cached image is a read-only base: the VM writes to its own overlay.
    overlay = tmp_path / "vm.qcow2"
    subprocess.run(
        [guest.program("qemu-img"), "create", "-q", "-f", "qcow2", "-b", str(image.image),
         "-F", image.format, str(overlay)],
        check=True, timeout=60,
    )
    seed = guest.make_nocloud_seed(
        tmp_path / "seed.iso", user_data=USER_DATA.format(key=key.public_line),
        meta_data=META_DATA,
    )

    args = [
        "-device", "virtio-rng-pci",
        *guest.qga_args("qga0"),
        # The root disk first (/dev/vda), the seed second: both virtio (no AHCI in the kernel).
        *guest.virtio_disk_args(overlay, "root"),
        *guest.virtio_disk_args(seed, "seed", fmt="raw", read_only=True),
        *guest.ssh_forward_args(),
    ]  # fmt: skip
    vm = qemus.start(image.kernel, image.initrd, guest.CLOUD_APPEND, memory=512,
                     chardevs=("qga0",), args=args)
    # cloud-init's final stage prints the host keys, then its "finished" line.
    vm.wait_for(guest.HOST_KEYS_END, BOOT_TIMEOUT)
    vm.wait_for(FINISHED, FINISH_TIMEOUT)
    seconds = time.monotonic() - vm.started
    host_keys = guest.host_keys_from_console(vm.console.text)
    # ssh_genkeytypes: [ed25519], made at first boot, named after the seed's hostname.
    assert [k.split()[0] for k in host_keys] == ["ssh-ed25519"], vm.console.text
    assert " root@maqet-cloud-test" in vm.console.text, host_keys

    port = vm.forwarded_port()
    known_hosts = guest.write_known_hosts(tmp_path / "known_hosts", host_keys, port)
    result = subprocess.run(
        [guest.program("ssh"), *guest.ssh_options(key.private_key, known_hosts), "-p", str(port),
         "tester@127.0.0.1",
         "hostname; sudo -n id -u; cat /run/cloud-init/result.json; cloud-init status"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=SSH_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{vm.console.text[-3000:]}"
    hostname, uid, rest = result.stdout.split("\n", 2)
    assert hostname == "maqet-cloud-test"  # user-data's hostname wins over local-hostname
    assert uid == "0"  # the seed's sudo rule
    decoder = json.JSONDecoder()
    outcome, end = decoder.raw_decode(rest)
    assert outcome["v1"]["errors"] == [], outcome
    assert outcome["v1"]["datasource"].startswith("DataSourceNoCloud"), outcome
    assert rest[end:].split() == ["status:", "done"], rest

    with guest.GuestAgent(vm.sockets["qga0"]) as agent:
        agent.sync(QGA_TIMEOUT)
        assert agent.execute("guest-get-host-name") == {"host-name": "maqet-cloud-test"}

    assert vm.powerdown(EXIT_TIMEOUT) == 0, vm.log.read_text(errors="replace")
    print(f"cloud image: host keys and cloud-init finished after {seconds:.1f} s")
