"""Disks from images: the VM side of the image cache (``maqet_engine.images``).

- :func:`prepare_image_disk`: at start, a missing disk whose entry has ``image`` becomes
  a qcow2 overlay on the cached image, fetched first on a miss. The overlay is made and
  registered while the image's lock is held, so a concurrent ``prune``/``rm`` can never
  delete the image between the fetch and the overlay that then protects it.
- :func:`image_users`: which VMs use a cached image, the ``in_use`` that ``rm`` and
  ``prune`` ask. A VM uses an image when its definition names it (through the digest
  its checksum gives, or the one the cache pinned for its source: a VM defined, or being
  started, before its overlay exists), or when one of its disks is an overlay whose
  qcow2 header names the cached file as its backing file. Overlays of removed VMs
  (orphaned disks, ``maqet storage ls --orphaned``) count too: deleting the image would
  ruin them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import AlreadyExists, MaqetError, RuntimeFailure
from maqet_engine.paths import Paths
from maqet_engine.store import Store
from maqet_engine.store import storage_records as records

TYPE_CHECKING = False
if TYPE_CHECKING:
    from maqet_engine.images import ImageCache, ImageEntry, ImageSource

Progress = Callable[[int, int | None], None]

_FETCH_ATTEMPTS = 3  # an image pruned between its fetch and our hold is fetched again


def image_cache(paths: Paths) -> ImageCache:
    """The installation's image cache, ``<data dir>/images``."""
    from maqet_engine.images import ImageCache

    return ImageCache(paths.data / C.IMAGES_DIR)


def source_of(entry: Mapping[str, Any]) -> ImageSource:
    """The image source of a normalized storage entry with ``image``."""
    from maqet_engine.images import parse_source

    return parse_source(entry["image"], entry.get("checksum"))


def shown_digest(digest: str) -> str:
    return f"{C.IMAGE_DIGEST_ALGORITHM}:{digest}"


def prepare_image_disk(paths: Paths, store: Store, vm_name: str, entry: Mapping[str, Any],
                       *, check_mode: bool, progress: Progress | None = None,
                       ) -> list[dict[str, Any]]:
    """Create the missing overlay of ``entry`` (which has ``image``), fetching the image
    on a cache miss; register the overlay as a file maqet created for ``vm_name``.

    :return: ``fetch_image`` (only when bytes were actually downloaded or copied; in
        check mode when the image is not cached) and ``create_disk`` actions.
    :raise MaqetError: what the cache raises (unreachable, 404, checksum mismatch, not
        an image, disk full: one line each), or a size smaller than the image's.
    """
    from maqet_engine.images.overlay import check_size, create_overlay

    cache = image_cache(paths)
    source = source_of(entry)
    target = Path(entry["file"])
    size = entry.get("size")
    if check_mode:
        cached = cache.lookup(source)  # no network, no writes
        actions: list[dict[str, Any]] = []
        if cached is None:
            actions.append(fetch_action(source.location, source.digest))
        else:
            check_size(cached, size)
        digest = cached.digest if cached is not None else source.digest
        actions.append(_create_action(entry, target, size if size is not None or cached is None
                                      else cached.virtual_size, source.location, digest))
        return actions
    actions = []
    for _attempt in range(_FETCH_ATTEMPTS):
        image, copied = fetch_image(cache, source, progress)
        if copied:
            actions.append(fetch_action(source.location, image.digest, image.size))
        with cache.hold(image.digest) as held:
            if held is None:
                continue  # removed (prune) since the fetch: fetch it again
            try:
                virtual = create_overlay(held, target, size=size)
            except AlreadyExists:
                if not target.exists():
                    raise
                return actions  # another start of this VM made it meanwhile: as good
            records.register_file(store, target, vm_name, entry["name"])
        actions.append(_create_action(entry, target, virtual, source.location, image.digest))
        return actions
    raise RuntimeFailure(f"image {source.location} was removed from the cache "
                         f"{_FETCH_ATTEMPTS} times while VM {vm_name!r} was starting",
                         hint="try again when no 'maqet image prune' or 'rm' runs in a loop")


def fetch_image(cache: ImageCache, source: ImageSource, progress: Progress | None,
           ) -> tuple[ImageEntry, bool]:
    """The cached image, and whether bytes were copied to get it (a miss)."""
    copied = False

    def report(done: int, total: int | None) -> None:
        nonlocal copied
        copied = True
        if progress is not None:
            progress(done, total)

    image = cache.fetch(source, progress=report)
    return image, copied


def fetch_action(location: str, digest: str | None, size: int | None = None,
                  ) -> dict[str, Any]:
    action: dict[str, Any] = {"action": "fetch_image", "location": location,
                              "digest": shown_digest(digest) if digest else None}
    if size is not None:
        action["size"] = size
    return action


def _create_action(entry: Mapping[str, Any], target: Path, size: int | None, location: str,
                   digest: str | None) -> dict[str, Any]:
    return {"action": "create_disk", "storage": entry["name"], "path": str(target),
            "size": size, "backing": shown_digest(digest) if digest else location,
            "image": location}


# --- which VMs use an image ----------------------------------------------------------
def image_users(paths: Paths, store: Store, cache: ImageCache) -> Callable[[str], list[str]]:
    """``in_use(digest)`` for :meth:`ImageCache.rm`/``prune``: the VMs using it.

    Computed afresh at each call (the cache calls it with the image's lock held, so a
    VM defined or started meanwhile is seen).
    """

    def in_use(digest: str) -> list[str]:
        return sorted({user for found, user in _uses(paths, store, cache) if found == digest})

    return in_use


def _uses(paths: Paths, store: Store, cache: ImageCache) -> Iterator[tuple[str, str]]:
    """``(digest, VM)`` for every use of a cached image (see the module docstring)."""
    files: dict[str, str] = {}  # disk file -> who is named as its user
    defined = store.list_vms()
    for record in defined:
        for entry in record.spec_data.get("storage") or []:
            if entry.get("image"):
                digest = _pinned(cache, entry)
                if digest is not None:
                    yield digest, record.name
            if entry.get("type") == "qcow2" and entry.get("file"):
                files.setdefault(os.path.normpath(entry["file"]), record.name)
    names = {record.name for record in defined}
    for row in records.all_files(store):
        if row.vm_name in names:
            files.setdefault(os.path.normpath(row.path), row.vm_name)
        else:
            files.setdefault(os.path.normpath(row.path),
                             f"{row.vm_name} (removed; its disk {row.path} remains)")
    for path, user in files.items():
        digest = _backing_digest(cache, path)
        if digest is not None:
            yield digest, user


def _pinned(cache: ImageCache, entry: Mapping[str, Any]) -> str | None:
    """The digest an entry's image resolves to without I/O beyond the cache: its
    checksum's, or the one the cache pinned for its source."""
    try:
        source = source_of(entry)
    except MaqetError:  # a stored spec is valid; be safe with hand-edited stores
        return None
    if source.digest is not None:
        return source.digest
    found = cache.lookup(source)
    return found.digest if found is not None else None


def _backing_digest(cache: ImageCache, path: str) -> str | None:
    """The cached image a qcow2 file's header names as its backing file, if any."""
    from maqet_engine.storage import qcow2

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        header = qcow2.read_header(fd)
        if not header.backing_offset:
            return None
        name = header.backing_name(fd)  # relative names start at the overlay's directory
        return cache.digest_of(os.path.join(os.path.dirname(path), name))
    except (qcow2.Unsupported, OSError, ValueError):
        return None
    finally:
        os.close(fd)
