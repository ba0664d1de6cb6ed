"""Which VMs use a cached image (what ``maqet image rm/prune`` refuse to remove): a VM
whose definition names it (by its checksum's digest, or the digest the cache pinned for
its source), or whose disk is an overlay whose qcow2 header names the cached file;
overlays left by removed VMs count too. Real SQLite store, real cache, qcow2 headers
written by hand (the reader needs only the header)."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.definition import parse_spec
from maqet_engine.errors import ConflictError
from maqet_engine.images import ImageCache, ImageEntry, parse_source
from maqet_engine.paths import Paths, resolve_paths
from maqet_engine.storage.images import image_cache, image_users
from maqet_engine.store import Store
from maqet_engine.store import storage_records as records

MiB = 1024 * 1024


def overlay_on(path: Path, backing: str) -> Path:
    """A qcow2 v3 header naming ``backing`` (all the in-use check reads)."""
    name = backing.encode()
    header = struct.pack(">4sIQIIQIIQQIIQ", b"QFI\xfb", 3, 104, len(name), 16, MiB, 0, 0, 0,
                         0, 0, 0, 0)
    header += struct.pack(">QQQII", 0, 0, 0, 4, 104)
    path.write_bytes(header + name + b"\0" * (512 - len(header) - len(name)))
    return path


@pytest.fixture
def paths(maqet_home: Path) -> Paths:
    return resolve_paths()


@pytest.fixture
def cache(paths: Paths) -> ImageCache:
    return image_cache(paths)


@pytest.fixture
def store(paths: Paths):
    with Store.open(paths.db) as opened:
        yield opened


def pulled(cache: ImageCache, tmp_path: Path, name: str, checksum: str | None = None,
           ) -> ImageEntry:
    """A raw image file ``tmp_path/name`` (random content), fetched into the cache."""
    path = tmp_path / name
    path.write_bytes(os.urandom(MiB))
    return cache.fetch(parse_source(str(path), checksum))


def define(store: Store, paths: Paths, tmp_path: Path, name: str,
           *storage: dict[str, Any]) -> None:
    spec = parse_spec({"name": name, "storage": list(storage)}, base_dir=tmp_path, paths=paths)
    store.insert_vm(spec.name, spec.to_json(), spec.hash)


def users(paths: Paths, store: Store, cache: ImageCache, entry: ImageEntry) -> list[str]:
    return image_users(paths, store, cache)(entry.digest)


def test_named_by_the_checksums_digest_before_any_overlay_exists(paths, store, cache, tmp_path):
    """A VM defined (or being started) with a sha256 checksum holds its image."""
    image = pulled(cache, tmp_path, "a.img")
    define(store, paths, tmp_path, "web1", {"name": "root", "type": "qcow2",
                                            "image": "http://127.0.0.1:9/a.img",
                                            "checksum": f"sha256:{image.digest}"})
    define(store, paths, tmp_path, "other", {"name": "root", "type": "qcow2", "size": 1})
    assert users(paths, store, cache, image) == ["web1"]


def test_named_through_the_pin_of_a_local_file(paths, store, cache, tmp_path):
    image = pulled(cache, tmp_path, "local.img")  # pinned by the file's identity
    define(store, paths, tmp_path, "web1", {"name": "root", "type": "qcow2",
                                            "image": "local.img"})
    assert users(paths, store, cache, image) == ["web1"]
    (tmp_path / "local.img").write_bytes(os.urandom(MiB))  # another file now: not this one
    assert users(paths, store, cache, image) == []


def test_named_through_the_pin_of_a_sha256sums_file(paths, store, cache, tmp_path):
    data = os.urandom(MiB)
    (tmp_path / "d.img").write_bytes(data)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(data).hexdigest()}  d.img\n")
    checksum = f"sha256:file://{sums}"
    image = cache.fetch(parse_source(str(tmp_path / "d.img"), checksum))
    define(store, paths, tmp_path, "web1", {"name": "root", "type": "qcow2", "image": "d.img",
                                            "checksum": checksum})
    assert users(paths, store, cache, image) == ["web1"]


def test_an_overlay_maqet_created_holds_its_image_whatever_the_definition_says(
        paths, store, cache, tmp_path):
    image = pulled(cache, tmp_path, "a.img")
    define(store, paths, tmp_path, "web1", {"name": "root", "type": "qcow2", "size": 1,
                                            "file": str(tmp_path / "elsewhere.qcow2")})
    disk = overlay_on(tmp_path / "root.qcow2", str(image.path))
    records.register_file(store, disk, "web1", "root")
    assert users(paths, store, cache, image) == ["web1"]


def test_a_disk_named_in_a_definition_holds_its_image(paths, store, cache, tmp_path):
    """An overlay made by hand on a cached image and given as a VM's disk counts too."""
    image = pulled(cache, tmp_path, "a.img")
    disk = overlay_on(tmp_path / "mine.qcow2", str(image.path))
    define(store, paths, tmp_path, "web1", {"name": "root", "type": "qcow2",
                                            "file": str(disk)})
    assert users(paths, store, cache, image) == ["web1"]


def test_an_overlay_with_a_relative_backing_name(paths, store, cache, tmp_path):
    image = pulled(cache, tmp_path, "a.img")
    disk = overlay_on(tmp_path / "rel.qcow2", os.path.relpath(image.path, tmp_path))
    define(store, paths, tmp_path, "web1", {"name": "root", "type": "qcow2",
                                            "file": str(disk)})
    assert users(paths, store, cache, image) == ["web1"]


def test_the_overlay_of_a_removed_vm_still_holds_its_image(paths, store, cache, tmp_path):
    image = pulled(cache, tmp_path, "a.img")
    disk = overlay_on(tmp_path / "root.qcow2", str(image.path))
    records.register_file(store, disk, "gone", "root")
    [user] = users(paths, store, cache, image)
    assert user == f"gone (removed; its disk {disk} remains)"
    disk.unlink()  # `maqet storage rm --orphaned` deleted it
    assert users(paths, store, cache, image) == []


def test_overlays_on_other_files_and_non_qcow2_disks_do_not_count(paths, store, cache,
                                                                  tmp_path):
    image = pulled(cache, tmp_path, "a.img")
    other = overlay_on(tmp_path / "o.qcow2", str(tmp_path / "a.img"))  # the source, not the copy
    raw = tmp_path / "r.raw"
    raw.write_bytes(b"\0" * 512)
    define(store, paths, tmp_path, "web1", {"name": "a", "type": "qcow2", "file": str(other)},
           {"name": "b", "type": "raw", "file": str(raw)})
    records.register_file(store, tmp_path / "missing.qcow2", "web1", "c")
    assert users(paths, store, cache, image) == []


def test_rm_and_prune_refuse_what_is_in_use_and_name_the_vms(paths, store, cache, tmp_path):
    used = pulled(cache, tmp_path, "used.img")
    unused = pulled(cache, tmp_path, "unused.img")
    define(store, paths, tmp_path, "web1", {"name": "root", "type": "qcow2",
                                            "image": "used.img"})
    define(store, paths, tmp_path, "web2", {"name": "root", "type": "qcow2",
                                            "image": "used.img"})
    in_use = image_users(paths, store, cache)
    with pytest.raises(ConflictError, match=r"is in use by VMs web1, web2"):
        cache.rm(used.digest, in_use)
    assert [e.digest for e in cache.prune(in_use, check_mode=True)] == [unused.digest]
    assert {e.digest for e in cache.ls()} == {used.digest, unused.digest}
    assert [e.digest for e in cache.prune(in_use)] == [unused.digest]
    assert [e.digest for e in cache.ls()] == [used.digest]


def test_prune_passes_by_an_image_a_start_holds(paths, store, cache, tmp_path):
    """A start holds the image's lock from before its overlay exists until the overlay
    is registered: a concurrent prune cannot take the image away in between."""
    image = pulled(cache, tmp_path, "a.img")
    in_use = image_users(paths, store, cache)
    with cache.hold(image.digest) as held:
        assert held is not None and held.digest == image.digest
        assert cache.prune(in_use) == []
    assert [e.digest for e in cache.prune(in_use)] == [image.digest]
    with cache.hold(image.digest) as held:
        assert held is None
