"""The atomic writers: the seed image and known_hosts (mode 0600, no needless rewrite)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from maqet_engine.cloudinit import build_seed, write_seed
from maqet_engine.cloudinit.files import write_atomic
from maqet_engine.cloudinit.image import MIN_IMAGE_BYTES, build_image, holds
from maqet_engine.errors import HostError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_seed_writes_0600_and_returns_the_hash(tmp_path: Path):
    seed = build_seed({"hostname": "web1"}, vm_name="web1")
    image = write_seed(seed, tmp_path / "cidata.iso")
    data = (tmp_path / "cidata.iso").read_bytes()
    assert image.path == tmp_path / "cidata.iso"
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.changed
    assert holds(io.BytesIO(data), seed.files(), label="cidata")
    assert _mode(image.path) == 0o600
    assert os.listdir(tmp_path) == ["cidata.iso"]  # no temporary file left


def test_an_unchanged_seed_is_not_rewritten(tmp_path: Path):
    seed = build_seed({"hostname": "web1"}, vm_name="web1")
    first = write_seed(seed, tmp_path / "s.iso")
    os.utime(first.path, ns=(1_000_000_000, 1_000_000_000))
    before = first.path.stat()
    again = write_seed(build_seed({"hostname": "web1"}, vm_name="web1"), tmp_path / "s.iso")
    assert not again.changed and again.sha256 == first.sha256  # the existing image's hash
    after = first.path.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (
        before.st_ino, 1_000_000_000, before.st_ctime_ns)


def test_an_unchanged_seed_gets_its_mode_fixed_without_a_rewrite(tmp_path: Path):
    seed = build_seed({"hostname": "web1"}, vm_name="web1")
    first = write_seed(seed, tmp_path / "s.iso")
    first.path.chmod(0o644)
    inode = first.path.stat().st_ino
    assert not write_seed(seed, first.path).changed
    assert _mode(first.path) == 0o600 and first.path.stat().st_ino == inode


def test_a_changed_seed_replaces_the_image_by_rename(tmp_path: Path):
    first = write_seed(build_seed({"hostname": "web1"}, vm_name="web1"), tmp_path / "s.iso")
    inode = first.path.stat().st_ino
    seed = build_seed({"hostname": "web2"}, vm_name="web1")
    changed = write_seed(seed, tmp_path / "s.iso")
    assert changed.changed and changed.sha256 != first.sha256
    assert first.path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert holds(io.BytesIO(first.path.read_bytes()), seed.files(), label="cidata")
    assert _mode(first.path) == 0o600
    assert os.listdir(tmp_path) == ["s.iso"]


@pytest.mark.parametrize("existing", [
    b"",
    b"not an ISO image" * 4096,
    "a damaged image",
    "another label",
    "a file too many",
    "a file missing",
])
def test_an_image_that_does_not_hold_the_seed_is_replaced(tmp_path: Path, existing: object):
    seed = build_seed({"hostname": "web1", "network_config": {"version": 2}}, vm_name="web1")
    files = seed.files()
    if existing == "a damaged image":
        data = bytearray(build_image(files, label="cidata"))
        at = data.rfind(files[-1][1])  # the last file's extent (before the padding)
        data[at:at + 2048] = b"\xff" * 2048
        existing = bytes(data)
    elif existing == "another label":
        existing = build_image(files, label="CIDATA")
    elif existing == "a file too many":
        existing = build_image([*files, ("vendor-data", b"")], label="cidata")
    elif existing == "a file missing":
        existing = build_image(files[:2], label="cidata")
    assert isinstance(existing, bytes)
    target = tmp_path / "s.iso"
    target.write_bytes(existing)
    image = write_seed(seed, target)
    assert image.changed
    assert holds(io.BytesIO(target.read_bytes()), files, label="cidata")


def test_a_symlink_is_replaced_not_followed(tmp_path: Path):
    seed = build_seed({"hostname": "web1"}, vm_name="web1")
    elsewhere = tmp_path / "elsewhere.iso"
    elsewhere.write_bytes(seed.image())
    (tmp_path / "s.iso").symlink_to(elsewhere)
    image = write_seed(seed, tmp_path / "s.iso")
    assert image.changed and not image.path.is_symlink()
    assert holds(io.BytesIO(elsewhere.read_bytes()), seed.files(), label="cidata")


def test_an_unchanged_file_gets_its_mode_fixed_without_a_rewrite(tmp_path: Path):
    path = tmp_path / "f"
    assert write_atomic(path, b"x")
    path.chmod(0o644)
    assert not write_atomic(path, b"x")
    assert _mode(path) == 0o600


def test_write_into_a_missing_directory_is_a_host_error(tmp_path: Path):
    with pytest.raises(HostError, match="cannot write .*/missing/s.iso") as caught:
        write_seed(build_seed({}, vm_name="web1"), tmp_path / "missing" / "s.iso")
    assert caught.value.exit_code == 6
    assert isinstance(caught.value.__cause__, OSError)


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(HostError, match="No space left on device"):
        write_atomic(tmp_path / "f", b"data")
    assert os.listdir(tmp_path) == []


def test_the_image_is_padded_for_busybox_findfs():
    """busybox's volume_id reads 68 KiB before it probes for iso9660: a shorter seed is
    never found by LABEL=cidata in an initramfs (the ssh test guest's)."""
    seed = build_seed({"hostname": "web1"}, vm_name="web1")
    data = seed.image()
    assert len(data) >= MIN_IMAGE_BYTES >= 0x11000 and len(data) % 2048 == 0
    assert holds(io.BytesIO(data), seed.files(), label="cidata")
