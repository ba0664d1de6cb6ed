"""Facade calls about the image cache (``<data dir>/images``): list, pull, remove, prune.

Disks get their images when their VM starts (``apply``); these calls let a front end
fill the cache ahead of time and clean it up. ``rm`` and ``prune`` never remove an image
a VM uses (see :mod:`maqet_engine.storage.images`): the error names the VMs. Each call
returns a :class:`Result` whose ``data`` is the image(s) concerned, as
``ImageEntry.to_dict()`` plus ``used_by`` (VM names) where it was computed.
"""

from __future__ import annotations

from typing import Any

from maqet_engine.engine.api import Progress
from maqet_engine.engine.context import EngineContext, operation
from maqet_engine.engine.result import Result


@operation
def images(ctx: EngineContext) -> Result:
    """The cached images, oldest first (``data``: a list), each with ``used_by``."""
    from maqet_engine.storage.images import image_cache, image_users

    cache = image_cache(ctx.paths)
    with ctx.open_store(create=False, verify=False) as store:
        in_use = image_users(ctx.paths, store, cache)
        data = [_image(entry, in_use(entry.digest)) for entry in cache.ls()]
    return Result(name=None, state="images", data=data)


@operation
def pull_image(ctx: EngineContext, location: str, checksum: str | None = None, *,
               progress: Progress | None = None) -> Result:
    """Fetch an image into the cache, as a start would (a local path is relative to the
    working directory). ``changed`` when bytes were downloaded or copied (action
    ``fetch_image``); a cached image is a no-op. Check mode looks in the cache only.

    :param progress: ``progress(done_bytes, total_or_None)`` while bytes are copied.
    :raise ConfigError: a bad location or checksum, a checksum mismatch, not a disk image.
    :raise NotFoundError: no such file, HTTP 404/410.
    :raise RuntimeFailure: the download failed (refused, DNS, TLS, cut off).
    :raise HostError: the cache cannot be written (disk full).
    """
    from maqet_engine.images import parse_source
    from maqet_engine.storage.images import fetch_action, fetch_image, image_cache

    source = parse_source(location, checksum)
    cache = image_cache(ctx.paths)
    result = Result(name=None, state="pulled")
    if ctx.check_mode:
        with ctx.open_store(create=False):  # the installation's trust checks
            found = cache.lookup(source)
        if found is None:
            result.extend([fetch_action(source.location, source.digest)])
        else:
            result.data = _image(found)
        return result
    with ctx.open_store(create=True):  # private data directory, trust checks
        entry, copied = fetch_image(cache, source, progress)
    if copied:
        result.extend([fetch_action(source.location, entry.digest, entry.size)])
    result.data = _image(entry)
    return result


@operation
def remove_image(ctx: EngineContext, digest: str) -> Result:
    """Remove one cached image, named by its digest or an unambiguous prefix (at least 8
    hex digits, ``sha256:`` optional). Action ``remove_image``.

    :raise ConflictError: VMs use it (named in the message).
    :raise NotFoundError: no such image.
    :raise UsageError: a prefix too short, not hex, or matching several images.
    """
    from maqet_engine.storage.images import image_cache, image_users

    cache = image_cache(ctx.paths)
    result = Result(name=None, state="absent")
    with ctx.open_store(create=False) as store:
        entry = cache.rm(digest, image_users(ctx.paths, store, cache),
                         check_mode=ctx.check_mode)
    result.extend([_remove_action(entry)])
    result.data = _image(entry)
    return result


@operation
def prune_images(ctx: EngineContext) -> Result:
    """Remove every cached image no VM uses (an image a start holds is passed by), and
    what killed downloads left. ``data``: the images removed."""
    from maqet_engine.storage.images import image_cache, image_users

    cache = image_cache(ctx.paths)
    result = Result(name=None, state="pruned")
    with ctx.open_store(create=False) as store:
        removed = cache.prune(image_users(ctx.paths, store, cache),
                              check_mode=ctx.check_mode)
    result.extend([_remove_action(entry) for entry in removed])
    result.data = [_image(entry) for entry in removed]
    return result


def _image(entry: Any, used_by: list[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = entry.to_dict()
    if used_by is not None:
        data["used_by"] = used_by
    return data


def _remove_action(entry: Any) -> dict[str, Any]:
    from maqet_engine.storage.images import shown_digest

    return {"action": "remove_image", "digest": shown_digest(entry.digest),
            "location": entry.source, "size": entry.size}
