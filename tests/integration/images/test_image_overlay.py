"""Per-VM overlays on cached images with the real qemu-img, and the removal rules that
protect the images overlays still need (rm refuses, prune keeps)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from image_server import ImageServer  # tests/support

from maqet_engine import constants as C
from maqet_engine.errors import AlreadyExists, ConfigError, ConflictError, NotFoundError
from maqet_engine.images import ImageCache, ImageEntry, create_overlay, parse_source

pytestmark = pytest.mark.qemu

MiB = 1024 * 1024


def info(path: Path) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return dict(json.loads(out))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    return ImageCache(tmp_path / "data" / C.IMAGES_DIR)


@pytest.fixture
def qcow2_image(tmp_path: Path, server: ImageServer, cache: ImageCache) -> ImageEntry:
    made = tmp_path / "made.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(made), "64M"], check=True)
    digest = server.add("base.qcow2", made.read_bytes())
    return cache.fetch(parse_source(server.url("base.qcow2"), f"sha256:{digest}"))


@pytest.fixture
def vm_dir(tmp_path: Path) -> Path:
    path = tmp_path / "vms" / "web1"
    path.mkdir(parents=True)
    return path


def test_overlay_on_a_qcow2_image_keeps_the_image_untouched(qcow2_image: ImageEntry,
                                                           vm_dir: Path):
    overlay = vm_dir / "root.qcow2"
    assert create_overlay(qcow2_image, overlay) == 64 * MiB
    facts = info(overlay)
    assert (facts["format"], facts["virtual-size"], facts["backing-filename"],
            facts["backing-filename-format"]) == (
        "qcow2", 64 * MiB, str(qcow2_image.path), "qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", str(overlay)],
                   check=True, capture_output=True)
    assert sha256(qcow2_image.path) == qcow2_image.digest  # the VM wrote to its overlay only
    assert [p.name for p in vm_dir.iterdir()] == ["root.qcow2"]  # no temporary file left


def test_overlay_on_a_raw_image(server: ImageServer, cache: ImageCache, vm_dir: Path):
    digest = server.add("disk.raw", os.urandom(2 * MiB))
    image = cache.fetch(parse_source(server.url("disk.raw"), f"sha256:{digest}"))
    overlay = vm_dir / "root.qcow2"
    assert create_overlay(image, overlay, size=2 * MiB) == 2 * MiB
    facts = info(overlay)
    assert (facts["virtual-size"], facts["backing-filename-format"]) == (2 * MiB, "raw")


def test_overlay_grows_to_a_larger_size_and_refuses_a_smaller_one(qcow2_image: ImageEntry,
                                                                  vm_dir: Path):
    grown = vm_dir / "grown.qcow2"
    assert create_overlay(qcow2_image, grown, size=1024 * MiB) == 1024 * MiB
    assert info(grown)["virtual-size"] == 1024 * MiB
    small = vm_dir / "small.qcow2"
    with pytest.raises(ConfigError) as err:
        create_overlay(qcow2_image, small, size=32 * MiB)
    assert str(err.value) == (
        f"disk size 32.0 MiB ({32 * MiB} bytes) is smaller than its image "
        f"sha256:{qcow2_image.digest[:12]} (64.0 MiB, {64 * MiB} bytes); give at least the "
        "image's size, or leave the size out")
    assert not small.exists()


def test_overlay_never_replaces_a_file_and_needs_its_directory(qcow2_image: ImageEntry,
                                                               vm_dir: Path):
    existing = vm_dir / "root.qcow2"
    existing.write_bytes(b"the VM's data")
    with pytest.raises(AlreadyExists, match="overlay .*root.qcow2 exists already"):
        create_overlay(qcow2_image, existing)
    assert existing.read_bytes() == b"the VM's data"
    with pytest.raises(NotFoundError, match="directory .*/absent does not exist; create it"):
        create_overlay(qcow2_image, vm_dir / "absent" / "root.qcow2")


def test_rm_and_prune_spare_the_images_overlays_use(server: ImageServer, cache: ImageCache,
                                                    qcow2_image: ImageEntry, vm_dir: Path):
    digest = server.add("unused.raw", os.urandom(MiB))
    unused = cache.fetch(parse_source(server.url("unused.raw"), f"sha256:{digest}"))
    overlays = {"web1": vm_dir / "root.qcow2"}
    create_overlay(qcow2_image, overlays["web1"])

    def in_use(digest: str) -> list[str]:
        """What the engine will answer from its store; here from the overlays' headers."""
        path = str(cache.root / "sha256" / digest)
        return [vm for vm, ov in overlays.items() if info(ov).get("backing-filename") == path]

    with pytest.raises(ConflictError, match=f"image sha256:{qcow2_image.digest[:12]} is in "
                       "use by VM web1; remove those VMs"):
        cache.rm(qcow2_image.digest[:8], in_use)
    assert cache.prune(in_use) == [unused]
    assert cache.ls() == [qcow2_image]
    assert subprocess.run(["qemu-img", "check", str(overlays["web1"])],
                          capture_output=True).returncode == 0
    overlays.clear()  # the VM is gone
    assert cache.prune(in_use) == [qcow2_image]
    assert cache.ls() == []
