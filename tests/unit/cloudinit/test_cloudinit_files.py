"""The atomic writers: the seed image and known_hosts (mode 0600, no needless rewrite)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from maqet_engine.cloudinit import build_seed, write_seed
from maqet_engine.cloudinit.files import write_atomic
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
    assert data == seed.image()
    assert _mode(image.path) == 0o600
    assert os.listdir(tmp_path) == ["cidata.iso"]  # no temporary file left


def test_an_unchanged_seed_is_not_rewritten(tmp_path: Path):
    seed = build_seed({"hostname": "web1"}, vm_name="web1")
    first = write_seed(seed, tmp_path / "s.iso")
    os.utime(first.path, ns=(1_000_000_000, 1_000_000_000))
    inode = first.path.stat().st_ino
    again = write_seed(build_seed({"hostname": "web1"}, vm_name="web1"), tmp_path / "s.iso")
    assert not again.changed and again.sha256 == first.sha256
    assert first.path.stat().st_mtime_ns == 1_000_000_000
    assert first.path.stat().st_ino == inode
    changed = write_seed(build_seed({"hostname": "web2"}, vm_name="web1"), tmp_path / "s.iso")
    assert changed.changed and changed.sha256 != first.sha256
    assert first.path.stat().st_ino != inode  # replaced by rename, not rewritten in place


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
