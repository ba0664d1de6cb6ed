"""The seed as cloud-init meets it: a read-only virtio disk, read by the guest kernel's isofs.

The tiny test guest (tests/guest) boots the Debian cloud kernel; its initramfs lacks
``cdrom.ko``/``isofs.ko``, so this test fetches them from the same kernel package
(``apt-get download`` of the exact version in the guest's ``build-info``, ~27 MB once,
cached under ``~/.cache/maqet-test-guest-isofs``) and appends them to the initramfs as a
second cpio archive. In the guest it loads them, mounts the disk with Rock Ridge (how
cloud-init sees it) and with ``norock`` (Joliet), and compares every file's sha256 with the
seed's. The seed is attached as TEST-GUEST.md says: ``-drive if=virtio,format=raw,
readonly=on`` (q35's CD-ROM is AHCI, which this kernel lacks). The label is blkid's
business, not the kernel's: the host's blkid checks it in ``test_cloudinit_seed_image.py``
(Debian's busybox has no blkid applet).
Boot to the marker takes ~2 s under TCG here.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import guest
import pytest

from maqet_engine.cloudinit import Seed, build_seed, write_seed

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 120.0  # seconds to the guest's marker; ~2 s under TCG here
COMMAND_TIMEOUT = 30.0
DOWNLOAD_TIMEOUT = 600.0
MODULES = ("kernel/drivers/cdrom/cdrom.ko", "kernel/fs/isofs/isofs.ko")  # load order
MODULE_DIR = "maqet-isofs"  # where they land in the guest's root file system
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBWHlnhseLcB6KFFD4MBTA4 "
       "me@laptop")


def _kernel_package(files: guest.GuestFiles) -> tuple[str, str]:
    """(package, version) of the guest's kernel, from its build-info."""
    info = (files.kernel.parent / "build-info").read_text()
    found = re.search(r"^kernel_package=(\S+) (\S+)$", info, re.M)
    assert found, f"no kernel_package line in {files.kernel.parent / 'build-info'}"
    return found[1], found[2]


def _isofs_modules(files: guest.GuestFiles) -> dict[str, bytes]:
    """cdrom.ko and isofs.ko of the guest's exact kernel (downloaded once, then cached)."""
    package, version = _kernel_package(files)
    cache = guest.cache_root().with_name("maqet-test-guest-isofs") / f"{package}_{version}"
    if all((cache / Path(m).name).is_file() for m in MODULES):
        return {Path(m).name: (cache / Path(m).name).read_bytes() for m in MODULES}
    cache.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=cache.parent))
    try:
        apt = ["apt-get", "-q", "download", f"{package}={version}"]
        if os.geteuid() == 0:  # as root apt downloads as _apt, who cannot write here
            apt[1:1] = ["-o", "APT::Sandbox::User=root"]
        result = subprocess.run(apt, cwd=work, capture_output=True, text=True,
                                timeout=DOWNLOAD_TIMEOUT, check=False)
        if result.returncode != 0:
            pytest.fail(f"apt-get download {package}={version} failed (run apt-get update, "
                        f"or rebuild the guest: tests/guest/build-guest.sh): {result.stderr}")
        (deb,) = work.glob("*.deb")
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                             timeout=DOWNLOAD_TIMEOUT, check=True).stdout
        found: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            for member in archive:
                for module in MODULES:
                    if member.isfile() and member.name.endswith("/" + module):
                        extracted = archive.extractfile(member)
                        assert extracted is not None
                        found[Path(module).name] = extracted.read()
        assert set(found) == {Path(m).name for m in MODULES}, f"{deb} lacks {MODULES}"
        staged = work / "modules"
        staged.mkdir()
        for name, data in found.items():
            (staged / name).write_bytes(data)
        with contextlib.suppress(OSError):  # a concurrent test may have published it first
            os.rename(staged, cache)
        return found
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the kernel's initramfs format ("newc")."""
    out = bytearray()
    trailer = [("TRAILER!!!", 0, b"")]
    for ino, (name, mode, data) in enumerate(entries + trailer, start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + "".join(f"{v:08x}" for v in fields).encode()
        out += encoded + b"\0" * (-(110 + len(encoded)) % 4)
        out += data + b"\0" * (-len(data) % 4)
    return bytes(out)


@pytest.fixture(scope="module")
def boot_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(kernel, initrd): the test guest's initramfs plus a second archive with the modules."""
    files = guest.ensure_guest()
    modules = _isofs_modules(files)
    extra = _newc([(MODULE_DIR, 0o040755, b"")] + [
        (f"{MODULE_DIR}/{name}", 0o100644, data) for name, data in modules.items()])
    initrd = tmp_path_factory.mktemp("isofs-guest") / "initrd.gz"
    initrd.write_bytes(files.initrd.read_bytes() + gzip.compress(extra, mtime=0))
    return files.kernel, initrd


class Guest:
    def __init__(self, console: guest.SerialConsole) -> None:
        self.console = console

    def run(self, command: str, done: str) -> str:
        """Type ``command``; return its output up to ``done`` (which the echo must not show:
        compute it in the shell, e.g. ``$((1+1))``)."""
        self.console.wait_for(guest.GUEST_PROMPT, COMMAND_TIMEOUT)
        self.console.send(command + "\n")
        return self.console.wait_for(re.compile(re.escape(done) + r"\n"), COMMAND_TIMEOUT)


@pytest.fixture
def booted(boot_files: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[Guest, Seed]]:
    """The guest booted with a seed attached as its only disk; QEMU is killed at teardown."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "qemu-system-x86_64 not found"  # tests/conftest.py fails earlier
    seed = build_seed({"hostname": "web1", "users": [{"name": "root",
                                                      "ssh_authorized_keys": [KEY]}],
                       "network_config": {"version": 2,
                                          "ethernets": {"eth0": {"dhcp4": True}}}},
                      vm_name="web1")
    image = write_seed(seed, tmp_path / "cidata.iso").path
    sockdir = Path(tempfile.mkdtemp(prefix="maqet-seed-", dir="/tmp"))  # short AF_UNIX path
    listener = guest.listen_unix(sockdir / "serial.sock")
    kernel, initrd = boot_files
    argv = [
        qemu, "-machine", "q35", "-accel", guest.test_accel(), "-m", "256", "-nodefaults",
        "-display", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", guest.GUEST_APPEND,
        "-chardev", f"socket,id=s0,fd={listener.fileno()},server=on,wait=off",
        "-serial", "chardev:s0",
        "-drive", f"file={image},if=virtio,format=raw,readonly=on",
    ]  # fmt: skip
    log = tmp_path / "qemu.log"
    console = guest.SerialConsole(sockdir / "serial.sock")
    proc = None
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    pass_fds=(listener.fileno(),))
        listener.close()
        try:
            console.wait_for(guest.GUEST_MARKER, BOOT_TIMEOUT)
        except guest.SerialTimeout as exc:
            raise AssertionError(f"{exc}\nQEMU log:\n{log.read_text(errors='replace')}") from exc
        yield Guest(console), seed
    finally:
        listener.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        console.close()
        shutil.rmtree(sockdir, ignore_errors=True)


def _sha256s(output: str) -> dict[str, str]:
    return {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", output, re.M)}


def test_guest_kernel_reads_the_seed_like_cloud_init(booted: tuple[Guest, Seed]):
    vm, seed = booted
    expected = {name: hashlib.sha256(content).hexdigest() for name, content in seed.files()}
    vm.run(f"insmod /{MODULE_DIR}/cdrom.ko && insmod /{MODULE_DIR}/isofs.ko "
           "&& echo isofs-$((40+2))", "isofs-42")
    vm.run("mkdir -p /mnt/rr /mnt/joliet && mount -t iso9660 -o ro /dev/vda /mnt/rr && "
           "mount -t iso9660 -o ro,norock /dev/vda /mnt/joliet && echo mounted-$((2+1))",
           "mounted-3")
    rock_ridge = vm.run("cd /mnt/rr && sha256sum * && ls -l && cd / && echo rr-$((3+1))",
                        "rr-4")
    assert _sha256s(rock_ridge) == expected
    assert len(re.findall(r"^-r--r--r-- ", rock_ridge, re.M)) == len(expected)  # PX modes
    joliet = vm.run("cd /mnt/joliet && sha256sum * && cd / && echo joliet-$((4+1))",
                    "joliet-5")
    assert _sha256s(joliet) == expected
