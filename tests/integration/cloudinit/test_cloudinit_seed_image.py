"""The seed image read back by tools that share no code with maqet's writer.

- ``isoinfo`` (Debian package genisoimage) and ``xorriso`` (package xorriso): the label,
  the Rock Ridge and Joliet trees, and each file's exact bytes;
- ``blkid`` (util-linux): the label and type, which is how cloud-init finds the seed;
- the Linux kernel's isofs, as cloud-init reads it: through a loop mount on the host
  when the host kernel has iso9660, and always inside the tiny test guest (see
  ``test_cloudinit_seed_guest.py``);
- "unchanged" across processes: another interpreter, time zone and hash seed builds the
  same instance-id and files from the same config and leaves the image alone (same inode
  and mtime); a changed config replaces it. The image's bytes are not compared: pycdlib
  stamps the build time into them, and nothing relies on them;
- an image genisoimage wrote with the same files counts as the same seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.cloudinit import Seed, build_seed, write_seed

REPO = Path(__file__).resolve().parents[3]
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBWHlnhseLcB6KFFD4MBTA4 "
       "me@laptop")
CONFIG: dict[str, Any] = {
    "hostname": "web1",
    "users": [{"name": "root", "ssh_authorized_keys": [KEY]},
              {"name": "admin", "ssh_authorized_keys": [KEY], "sudo": True}],
    "user_data": {"packages": ["htop"], "final_message": "seed ok – ✓"},
    "network_config": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}},
}
NAMES = ["meta-data", "network-config", "user-data"]
TOOL_TIMEOUT = 30.0


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install the Debian package {package} "
                    "(the cloud-init integration tests read the seed back with it)")
    return path


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                            check=False)
    assert result.returncode == 0, f"{argv} failed: {result.stderr}"
    return result.stdout


@pytest.fixture
def seed() -> Seed:
    return build_seed(CONFIG, vm_name="web1")


@pytest.fixture
def image(seed: Seed, tmp_path: Path) -> Path:
    return write_seed(seed, tmp_path / "cidata.iso").path


def test_isoinfo_sees_label_extensions_and_exact_files(seed: Seed, image: Path):
    isoinfo = _tool("isoinfo", "genisoimage")
    info = _run(isoinfo, "-d", "-i", str(image))
    assert re.search(r"^Volume id: cidata$", info, re.M)
    assert "Rock Ridge signatures version 1 found" in info
    assert "Joliet with UCS level 3 found" in info
    for tree in ("-R", "-J"):
        listing = _run(isoinfo, tree, "-f", "-i", str(image)).split()
        assert sorted(listing) == [f"/{name}" for name in NAMES]
    rr_listing = _run(isoinfo, "-R", "-l", "-i", str(image))
    assert rr_listing.count("-r--r--r--") == 3  # Rock Ridge PX modes
    for name, content in seed.files():
        out = subprocess.run([isoinfo, "-R", "-x", f"/{name}", "-i", str(image)],
                             capture_output=True, timeout=TOOL_TIMEOUT, check=True).stdout
        assert out == content


def test_xorriso_extracts_the_same_files(seed: Seed, image: Path, tmp_path: Path):
    xorriso = _tool("xorriso", "xorriso")
    listing = subprocess.run([xorriso, "-indev", str(image), "-ls", "/"], capture_output=True,
                             text=True, timeout=TOOL_TIMEOUT, check=True)
    assert re.findall(r"^'([^']+)'$", listing.stdout, re.M) == NAMES
    assert "Volume id    : 'cidata'" in listing.stderr
    assert re.search(r"Media summary: 1 session, \d+ data blocks", listing.stderr)
    out = tmp_path / "extracted"
    subprocess.run([xorriso, "-osirrox", "on", "-indev", str(image), "-extract", "/", str(out)],
                   capture_output=True, timeout=TOOL_TIMEOUT, check=True)
    assert sorted(os.listdir(out)) == NAMES
    for name, content in seed.files():
        assert (out / name).read_bytes() == content


def test_blkid_finds_the_cidata_label(image: Path):
    blkid = _tool("blkid", "util-linux")
    fields = dict(line.split("=", 1) for line in
                  _run(blkid, "-p", "-o", "export", str(image)).splitlines() if "=" in line)
    assert fields["TYPE"] == "iso9660"
    assert fields["LABEL"] == "cidata"


def _host_has_iso9660() -> bool:
    with open("/proc/filesystems") as filesystems:
        return any(line.split()[-1] == "iso9660" for line in filesystems if line.strip())


@pytest.fixture
def loop_mount(image: Path, tmp_path: Path) -> Iterator[Path]:
    """The image mounted read-only through a loop device; unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root")
    if not _host_has_iso9660():
        pytest.skip("the host kernel has no iso9660 file system (not in /proc/filesystems, "
                    "no module to load); test_cloudinit_seed_guest.py mounts the seed "
                    "through the guest kernel's isofs instead")
    target = tmp_path / "mnt"
    target.mkdir()
    result = subprocess.run(["mount", "-t", "iso9660", "-o", "loop,ro", str(image), str(target)],
                            capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    if result.returncode != 0:
        pytest.fail(f"mount -o loop,ro failed although iso9660 is available: {result.stderr}")
    try:
        yield target
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["umount", str(target)], timeout=TOOL_TIMEOUT, check=False)


def test_linux_isofs_reads_the_files_through_a_loop_mount(seed: Seed, loop_mount: Path):
    """Needs root and an iso9660-capable host kernel; the machines this was written on
    (Firecracker-style kernel, no modules) have neither iso9660 nor modprobe, so it skips
    there and the guest test covers the kernel's reader."""
    assert sorted(os.listdir(loop_mount)) == NAMES
    for name, content in seed.files():
        assert (loop_mount / name).read_bytes() == content


_OTHER_PROCESS = (
    "import json, sys\n"
    "from maqet_engine.cloudinit import build_seed, write_seed\n"
    "seed = build_seed(json.loads(sys.argv[1]), vm_name='web1')\n"
    "image = write_seed(seed, sys.argv[2])\n"
    "print(json.dumps([seed.instance_id, image.sha256, image.changed]))\n"
)


def _write_in_another_process(config: dict[str, Any], path: Path) -> tuple[str, str, bool]:
    env = dict(os.environ, TZ="Pacific/Chatham", PYTHONHASHSEED="12345",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", _OTHER_PROCESS, json.dumps(config),
                             str(path)], capture_output=True, text=True, env=env,
                            timeout=TOOL_TIMEOUT, check=True)
    instance_id, sha256, changed = json.loads(result.stdout)
    return instance_id, sha256, changed


def test_another_process_finds_the_unchanged_seed_and_leaves_it(seed: Seed, image: Path):
    os.utime(image, ns=(1_000_000_000, 1_000_000_000))
    before = image.stat()
    instance_id, sha256, changed = _write_in_another_process(CONFIG, image)
    assert instance_id == seed.instance_id
    assert not changed
    assert sha256 == hashlib.sha256(image.read_bytes()).hexdigest()
    after = image.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, 1_000_000_000)


def test_another_process_replaces_a_changed_seed(seed: Seed, image: Path):
    inode = image.stat().st_ino
    config = {**CONFIG, "hostname": "web2"}
    instance_id, sha256, changed = _write_in_another_process(config, image)
    assert changed and instance_id != seed.instance_id
    assert sha256 == hashlib.sha256(image.read_bytes()).hexdigest()
    assert image.stat().st_ino != inode  # a new file renamed over the old one
    isoinfo = _tool("isoinfo", "genisoimage")
    meta = subprocess.run([isoinfo, "-R", "-x", "/meta-data", "-i", str(image)],
                          capture_output=True, timeout=TOOL_TIMEOUT, check=True).stdout
    assert meta == build_seed(config, vm_name="web1").meta_data
    assert f"instance-id: {instance_id}\n".encode() in meta


def test_an_image_genisoimage_wrote_with_the_same_files_is_kept(seed: Seed, tmp_path: Path):
    """Whatever wrote the image (genisoimage, cloud-localds, an older maqet), the same
    label and files are the same seed: no rewrite."""
    genisoimage = _tool("genisoimage", "genisoimage")
    src = tmp_path / "src"
    src.mkdir()
    for name, content in seed.files():
        (src / name).write_bytes(content)
    target = tmp_path / "cidata.iso"
    subprocess.run([genisoimage, "-quiet", "-output", str(target), "-volid", "cidata",
                    "-joliet", "-rock", *(str(src / name) for name, _ in seed.files())],
                   capture_output=True, timeout=TOOL_TIMEOUT, check=True)
    before = target.stat()
    image = write_seed(seed, target)
    assert not image.changed
    assert image.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (before.st_ino,
                                                                 before.st_mtime_ns)
