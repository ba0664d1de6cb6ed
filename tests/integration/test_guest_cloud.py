"""The cloud image (Debian 12 + real cloud-init) under raw QEMU, no maqet code: a NoCloud seed
makes a user with our key and sets the hostname, cloud-init prints the host keys on the
console, SSH works with host key checking on, qemu-ga answers, ACPI powers it off.

Real cloud-init under TCG takes ~35 s to reach SSH here, so this is one test that checks
everything in one boot.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import guest
import pytest

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 300.0  # seconds to the host key block; ~35 s under TCG here
FINISH_TIMEOUT = 120.0  # host keys -> "Cloud-init ... finished"; ~1 s here
SSH_TIMEOUT = 60.0
QGA_TIMEOUT = 120.0
EXIT_TIMEOUT = 120.0  # system_powerdown -> QEMU gone (systemd shutdown); ~2-3 s here
QMP_TIMEOUT = 10.0
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


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install it (bash scripts/setup.sh does)")
    return path


def qmp(path: Path, command: str, arguments: dict[str, Any] | None = None, *,
        hangup_ok: bool = False) -> Any:
    return guest.qmp_command(path, command, arguments, hangup_ok=hangup_ok, timeout=QMP_TIMEOUT)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes and pytest's tmp_path is long: sockets go to /tmp.
    path = Path(tempfile.mkdtemp(prefix="maqet-cloud-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed by PID at teardown."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_cloud_image_applies_nocloud_seed_and_serves_ssh(tmp_path, sockdir, processes):
    image = guest.ensure_cloud_image()
    key = guest.make_ssh_keypair(tmp_path)
    # The cached image is a read-only base: the VM writes to its own overlay.
    overlay = tmp_path / "vm.qcow2"
    subprocess.run(
        [_binary("qemu-img"), "create", "-q", "-f", "qcow2", "-b", str(image.image),
         "-F", image.format, str(overlay)],
        check=True, timeout=60,
    )
    seed = guest.make_nocloud_seed(
        tmp_path / "seed.iso", user_data=USER_DATA.format(key=key.public_line),
        meta_data=META_DATA,
    )

    qmp_socket, serial_socket, qga_socket = (sockdir / n for n in ("qmp", "serial", "qga"))
    listeners = [guest.listen_unix(p) for p in (qmp_socket, serial_socket, qga_socket)]
    fds = [sock.fileno() for sock in listeners]
    argv = [
        _binary("qemu-system-x86_64"),
        "-machine", "q35",
        "-accel", guest.test_accel(),
        "-m", "512",
        "-nodefaults",
        "-display", "none",
        "-kernel", str(image.kernel),
        "-initrd", str(image.initrd),
        "-append", guest.CLOUD_APPEND,
        "-no-reboot",
        "-chardev", f"socket,id=qmp0,fd={fds[0]},server=on,wait=off",
        "-mon", "chardev=qmp0,mode=control",
        "-chardev", f"socket,id=s0,fd={fds[1]},server=on,wait=off",
        "-serial", "chardev:s0",
        "-device", "virtio-rng-pci",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=qga0,fd={fds[2]},server=on,wait=off",
        "-device", f"virtserialport,chardev=qga0,name={guest.QGA_PORT_NAME}",
        # The root disk first (/dev/vda), the seed second: both virtio (no AHCI in the kernel).
        "-blockdev", f"driver=qcow2,node-name=root,file.driver=file,file.filename={overlay}",
        "-device", "virtio-blk-pci,drive=root",
        "-blockdev", f"driver=raw,node-name=seed,read-only=on,file.driver=file,"
                     f"file.filename={seed}",
        "-device", "virtio-blk-pci,drive=seed",
        "-netdev", "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    log = tmp_path / "qemu.log"
    try:
        console = guest.SerialConsole(serial_socket)
        try:
            with log.open("wb") as out:
                start = time.monotonic()
                processes.append(subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=fds
                ))
        except BaseException:
            console.close()
            raise
    finally:
        for sock in listeners:
            sock.close()  # QEMU holds its own copies
    vm = processes[0]

    with console:
        try:
            # cloud-init's final stage prints the host keys, then its "finished" line.
            console.wait_for(guest.HOST_KEYS_END, BOOT_TIMEOUT)
            console.wait_for(FINISHED, FINISH_TIMEOUT)
        except guest.SerialTimeout as exc:
            raise AssertionError(f"{exc}\nQEMU log:\n{log.read_text(errors='replace')}") from exc
        seconds = time.monotonic() - start
        host_keys = guest.host_keys_from_console(console.text)
        # ssh_genkeytypes: [ed25519], made at first boot, named after the seed's hostname.
        assert [k.split()[0] for k in host_keys] == ["ssh-ed25519"], console.text
        assert " root@maqet-cloud-test" in console.text, host_keys

        port = guest.forwarded_port(
            qmp(qmp_socket, "human-monitor-command", {"command-line": "info usernet"})
        )
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(
            "".join(guest.known_hosts_line(k, "127.0.0.1", port) + "\n" for k in host_keys)
        )
        result = subprocess.run(
            [_binary("ssh"), *guest.ssh_options(key.private_key, known_hosts), "-p", str(port),
             "tester@127.0.0.1",
             "hostname; sudo -n id -u; cat /run/cloud-init/result.json; cloud-init status"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=SSH_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{console.text[-3000:]}"
        hostname, uid, rest = result.stdout.split("\n", 2)
        assert hostname == "maqet-cloud-test"  # user-data's hostname wins over local-hostname
        assert uid == "0"  # the seed's sudo rule
        decoder = json.JSONDecoder()
        outcome, end = decoder.raw_decode(rest)
        assert outcome["v1"]["errors"] == [], outcome
        assert outcome["v1"]["datasource"].startswith("DataSourceNoCloud"), outcome
        assert rest[end:].split() == ["status:", "done"], rest

        with guest.GuestAgent(qga_socket) as agent:
            agent.sync(QGA_TIMEOUT)
            assert agent.execute("guest-get-host-name") == {"host-name": "maqet-cloud-test"}

        qmp(qmp_socket, "system_powerdown", hangup_ok=True)
        assert vm.wait(timeout=EXIT_TIMEOUT) == 0, log.read_text(errors="replace")
    print(f"cloud image: host keys and cloud-init finished after {seconds:.1f} s")
