"""Base images for VM disks: fetched once, verified, kept by content, shared by overlays.

::

    from maqet_engine.images import ImageCache, create_overlay, parse_source

    cache = ImageCache(paths.data / C.IMAGES_DIR)
    source = parse_source("https://example.org/debian.qcow2", "sha256:<hex>")
    image = cache.fetch(source, progress=bar)          # ImageEntry: path, format, ...
    create_overlay(image, vm_dir / "root.qcow2", size=20 * 2**30)

- :mod:`.source`: parse a location (path, ``file://``, ``http(s)://``) and checksum
  (``sha256:<hex>`` or ``sha256:<SHA256SUMS URL>``).
- :mod:`.cache`: :class:`ImageCache` (fetch, lookup, ls, rm, prune); its semantics.
- :mod:`.layout`: the files under the cache root, locks and temporary files.
- :mod:`.transfer`: reading a file or an HTTP(S) URL (urllib), errors in one line.
- :mod:`.stream`: hashing copy into the cache, disk-full handling.
- :mod:`.detect`: qcow2 or raw, from the content; what is refused.
- :mod:`.overlay`: a VM's qcow2 overlay on a cached image.
- :mod:`.progress`: the rate-limited progress callback and a TTY bar for it.

Importing this package is cheap (no urllib.request, http, ssl, hashlib, json,
logging, subprocess, asyncio, yaml): the operations that need them import them.
"""

from maqet_engine.images.cache import ImageCache, ImageEntry
from maqet_engine.images.detect import DiskFormat, detect_format
from maqet_engine.images.overlay import create_overlay
from maqet_engine.images.progress import TTYBar
from maqet_engine.images.source import ImageSource, find_in_sums, parse_source

__all__ = ["DiskFormat", "ImageCache", "ImageEntry", "ImageSource", "TTYBar",
           "create_overlay", "detect_format", "find_in_sums", "parse_source"]
