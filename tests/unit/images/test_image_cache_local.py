"""The cache with local sources (no network): copy and pin, verification, what lands and
what never does, listing, rm/prune with the in-use callback, digest prefixes, stale
temporary files, the lock-file protocol, and symlinks planted in the cache."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from maqet_engine.errors import ConfigError, ConflictError, HostError, NotFoundError, UsageError
from maqet_engine.images import ImageCache, parse_source, transfer
from maqet_engine.images.layout import Layout

MiB = 1024 * 1024


def raw_image(path: Path, size: int = MiB) -> str:
    """A random raw disk (random bytes always hold a NUL); returns its sha256."""
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def cache_files(root: Path) -> list[str]:
    """What is under <root>/sha256 (images, sidecars, temporary files)."""
    objects = root / "sha256"
    return sorted(os.listdir(objects)) if objects.exists() else []


def no_users(digest: str) -> list[str]:
    return []


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    return ImageCache(tmp_path / "cache")


def test_local_file_is_copied_pinned_and_then_a_hit_without_reading_it(
        tmp_path: Path, cache: ImageCache, monkeypatch: pytest.MonkeyPatch):
    src = tmp_path / "disk.img"
    digest = raw_image(src)
    calls: list[tuple[int, int | None]] = []
    entry = cache.fetch(parse_source(str(src)), progress=lambda d, t: calls.append((d, t)))
    assert (entry.digest, entry.format, entry.size, entry.virtual_size, entry.source) == (
        digest, "raw", MiB, MiB, str(src))
    assert entry.path == cache.root / "sha256" / digest
    assert entry.path.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(entry.path.stat().st_mode) == 0o400
    for directory in (cache.root, cache.root / "sha256", cache.root / "locks"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert calls[0] == (0, MiB) and calls[-1] == (MiB, MiB)
    assert cache_files(cache.root) == [digest, f"{digest}.json"]
    sidecar = json.loads((cache.root / "sha256" / f"{digest}.json").read_text())
    assert sidecar["source"] == str(src) and sidecar["format"] == "raw"

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a hit must not read the source")

    monkeypatch.setattr(transfer, "open_file", no_reading)
    assert cache.fetch(parse_source(str(src))) == entry
    assert cache.lookup(parse_source(str(src))) == entry


def test_a_changed_local_file_is_copied_again_and_the_old_copy_stays(
        tmp_path: Path, cache: ImageCache):
    src = tmp_path / "disk.img"
    raw_image(src)
    first = cache.fetch(parse_source(str(src)))
    second_digest = raw_image(src)
    second = cache.fetch(parse_source(str(src)))
    assert second.digest == second_digest != first.digest
    assert [e.digest for e in cache.ls()] == [first.digest, second.digest]
    src.unlink()  # the cache holds copies: VMs on them are unaffected
    assert first.path.exists() and second.path.exists()


def test_local_file_with_a_checksum_is_verified(tmp_path: Path, cache: ImageCache):
    src = tmp_path / "disk.img"
    digest = raw_image(src)
    wrong = "0" * 64
    with pytest.raises(ConfigError) as info:
        cache.fetch(parse_source(str(src), f"sha256:{wrong}"))
    assert str(info.value) == (
        f"image {src}: checksum mismatch: expected sha256:000000000000, got "
        f"sha256:{digest[:12]}; fix the checksum, or the location if it names another file")
    assert cache_files(cache.root) == []
    assert cache.fetch(parse_source(f"file://{src}", f"sha256:{digest}")).digest == digest


def test_not_an_image_never_lands(tmp_path: Path, cache: ImageCache):
    page = tmp_path / "disk.qcow2"
    page.write_text("<html><body>Sign in to download</body></html>\n")
    with pytest.raises(ConfigError, match=f"^image {page}: is an HTML page"):
        cache.fetch(parse_source(str(page)))
    assert cache_files(cache.root) == []


def test_missing_local_file(tmp_path: Path, cache: ImageCache):
    with pytest.raises(NotFoundError, match="no such file; check the path"):
        cache.fetch(parse_source(str(tmp_path / "nope.img")))


def test_reading_methods_create_nothing(tmp_path: Path, cache: ImageCache):
    src = tmp_path / "disk.img"
    raw_image(src)
    assert cache.ls() == [] and cache.lookup(parse_source(str(src))) is None
    assert cache.prune(no_users) == []
    assert not cache.root.exists()


def test_rm_refuses_an_image_in_use_and_names_the_vms(tmp_path: Path, cache: ImageCache):
    src = tmp_path / "disk.img"
    raw_image(src)
    entry = cache.fetch(parse_source(str(src)))
    users = {entry.digest: ["web2", "web1"]}
    with pytest.raises(ConflictError) as info:
        cache.rm(entry.digest[:8], lambda d: users.get(d, []))
    assert str(info.value) == (f"image sha256:{entry.digest[:12]} is in use by VMs web1, "
                               "web2; remove those VMs (or their disks on this image) first")
    assert entry.path.exists()
    assert cache.rm(f"sha256:{entry.digest[:10].upper()}", no_users) == entry
    assert cache_files(cache.root) == [] and os.listdir(cache.root / "locks") == []
    with pytest.raises(NotFoundError, match=f"no cached image sha256:{entry.digest[:8]}"):
        cache.rm(entry.digest[:8], no_users)


def test_digest_prefixes(tmp_path: Path, cache: ImageCache):
    src = tmp_path / "disk.img"
    raw_image(src)
    cache.fetch(parse_source(str(src)))
    # two more images whose digests share a prefix, planted as the cache would hold them
    for digest in ("abcdef01" + "1" * 56, "abcdef01" + "2" * 56):
        (cache.root / "sha256" / digest).write_bytes(b"\x00" * 512)
    with pytest.raises(UsageError, match="'abc' is not an image digest; give at least 8"):
        cache.rm("abc", no_users)
    with pytest.raises(UsageError, match="'xyz12345' is not an image digest"):
        cache.rm("xyz12345", no_users)
    with pytest.raises(UsageError, match=r"sha256:abcdef01 matches 2 images \(abcdef011111, "
                       r"abcdef012222\); give more digits"):
        cache.rm("abcdef01", no_users)
    assert cache.rm("abcdef012", no_users).digest == "abcdef01" + "2" * 56


def test_prune_keeps_images_in_use_and_temporary_files_of_live_fetches(
        tmp_path: Path, cache: ImageCache):
    kept, gone = tmp_path / "kept.img", tmp_path / "gone.img"
    raw_image(kept)
    raw_image(gone)
    kept_entry = cache.fetch(parse_source(str(kept)))
    gone_entry = cache.fetch(parse_source(str(gone)))
    objects = cache.root / "sha256"
    dead, live = "d" * 64, "e" * 64
    (objects / f".{dead}.0123.part").write_bytes(b"killed download")
    (objects / f".{live}.4567.part").write_bytes(b"download in progress")
    layout = Layout(cache.root)
    with layout.lock(live):  # another process fetching it right now
        removed = cache.prune(lambda d: ["vm1"] if d == kept_entry.digest else [])
    assert removed == [gone_entry]
    assert sorted(os.listdir(objects)) == sorted(
        [kept_entry.digest, f"{kept_entry.digest}.json", f".{live}.4567.part"])
    assert cache.ls() == [kept_entry]


def test_fetch_deletes_what_a_killed_fetch_of_the_same_image_left(
        tmp_path: Path, cache: ImageCache):
    src = tmp_path / "disk.img"
    digest = raw_image(src)
    objects = cache.root / "sha256"
    objects.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (objects / f".{digest}.0123.part").write_bytes(b"half a download")
    (objects / f".{digest}.4567.part").symlink_to(victim)
    (objects / f"{digest}.json").write_text("{}")  # a sidecar without its image
    entry = cache.fetch(parse_source(str(src), f"sha256:{digest}"))
    assert cache_files(cache.root) == [digest, f"{digest}.json"]
    assert victim.read_text() == "keep me" and entry.source == str(src)


def test_lost_sidecar_is_rebuilt(tmp_path: Path, cache: ImageCache):
    src = tmp_path / "disk.img"
    digest = raw_image(src)
    entry = cache.fetch(parse_source(str(src), f"sha256:{digest}"))
    (cache.root / "sha256" / f"{digest}.json").unlink()
    listed = cache.ls()
    assert [(e.digest, e.format, e.source) for e in listed] == [(digest, "raw", None)]
    again = cache.fetch(parse_source(str(src), f"sha256:{digest}"))
    assert (again.digest, again.source) == (digest, entry.source)
    assert (cache.root / "sha256" / f"{digest}.json").exists()


def test_symlink_planted_at_the_image_path_is_refused_not_followed(
        tmp_path: Path, cache: ImageCache):
    src = tmp_path / "disk.img"
    digest = raw_image(src)
    secret = tmp_path / "secret"
    secret.write_bytes(b"\x00" * 512)
    (cache.root / "sha256").mkdir(parents=True)
    (cache.root / "sha256" / digest).symlink_to(secret)
    with pytest.raises(HostError, match=f"{digest} is not a regular file .a symlink.."):
        cache.fetch(parse_source(str(src), f"sha256:{digest}"))
    assert cache.ls() == []
    assert secret.read_bytes() == b"\x00" * 512


def test_symlink_planted_at_a_lock_or_directory_is_refused(tmp_path: Path, cache: ImageCache):
    src = tmp_path / "disk.img"
    digest = raw_image(src)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (cache.root / "locks").mkdir(parents=True)
    (cache.root / "locks" / f"{digest}.lock").symlink_to(victim)
    with pytest.raises(HostError, match=f"{digest}.lock is a symlink; the image cache never "
                       "follows one"):
        cache.fetch(parse_source(str(src), f"sha256:{digest}"))
    assert victim.read_text() == "keep me"
    other = ImageCache(tmp_path / "other")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other.root.mkdir()
    (other.root / "sha256").symlink_to(elsewhere)
    with pytest.raises(HostError, match=r"sha256 is not a directory \(a symlink\?\)"):
        other.fetch(parse_source(str(src)))
    assert os.listdir(elsewhere) == []


def test_temporary_files_never_open_an_existing_name(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    layout = Layout(tmp_path / "cache")
    layout.ensure()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    planted = layout.objects / f".{'a' * 64}.{'00' * 8}.part"
    planted.symlink_to(victim)
    tokens = iter([b"\x00" * 8, b"\x01" * 8])
    monkeypatch.setattr(os, "urandom", lambda n: next(tokens))
    with layout.lock("a" * 64):
        fd, path = layout.new_temp("a" * 64, "part")
        os.write(fd, b"data")
        os.close(fd)
    assert path.name == f".{'a' * 64}.{'01' * 8}.part"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert victim.read_text() == "keep me"


def test_a_lock_deleted_by_its_holder_is_not_shared_by_two_waiters(tmp_path: Path):
    layout = Layout(tmp_path / "cache")
    layout.ensure()
    first = layout.lock("n")
    first.acquire()
    waiting = threading.Event()
    second = layout.lock("n", on_wait=waiting.set)
    waiter = threading.Thread(target=second.acquire, daemon=True)
    waiter.start()
    try:
        assert waiting.wait(10)
    finally:
        first.release()  # deletes the file: the waiter wakes up on the unlinked one
    waiter.join(10)
    assert not waiter.is_alive() and second.fd is not None
    assert os.fstat(second.fd).st_ino == os.stat(layout.lock_path("n")).st_ino
    third = layout.lock("n")
    assert not third.acquire(blocking=False)
    second.release()
    assert not layout.lock_path("n").exists()
    assert third.acquire(blocking=False)
    third.release()


@pytest.mark.parametrize("sidecar", ["{not json", '{"digest": "x"}', '{"format": "vmdk"}', "[]"])
def test_a_damaged_sidecar_is_rebuilt_not_trusted(tmp_path: Path, cache: ImageCache,
                                                  sidecar: str):
    src = tmp_path / "disk.img"
    digest = raw_image(src)
    cache.fetch(parse_source(str(src), f"sha256:{digest}"))
    path = cache.root / "sha256" / f"{digest}.json"
    path.write_text(sidecar)
    assert [(e.digest, e.format, e.virtual_size) for e in cache.ls()] == [(digest, "raw", MiB)]
    assert cache.fetch(parse_source(str(src), f"sha256:{digest}")).format == "raw"
    assert json.loads(path.read_text())["digest"] == digest
