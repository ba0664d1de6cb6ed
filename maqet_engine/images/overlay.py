"""A VM's disk on a cached image: a qcow2 overlay whose backing file is the image.

The VM writes only to its overlay; the cached image is never written (mode 0400) and
may back any number of overlays. The overlay records the image's absolute path, so the
cache root must not move while overlays use it, and an image must not be removed while
one does (``ImageCache.rm``/``prune`` ask the caller which VMs use a digest).
"""

from __future__ import annotations

import os
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import AlreadyExists, ConfigError, NotFoundError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from maqet_engine.images.cache import ImageEntry


def check_size(image: ImageEntry, size: int | None) -> None:
    """Refuse an overlay ``size`` smaller than ``image`` (check mode asks before
    :func:`create_overlay` would).

    :raise ConfigError: ``size`` is smaller than the image's virtual size.
    """
    from maqet_engine.images.cache import short
    from maqet_engine.images.progress import human_size

    if size is not None and size < image.virtual_size:
        raise ConfigError(f"disk size {human_size(size)} ({size} bytes) is smaller than "
                          f"its image {short(image.digest)} ({human_size(image.virtual_size)}, "
                          f"{image.virtual_size} bytes)",
                          hint="give at least the image's size, or leave the size out")


def create_overlay(image: ImageEntry, overlay: Path | str, *, size: int | None = None) -> int:
    """Create the qcow2 ``overlay`` backed by ``image``; return its virtual size.

    ``qemu-img create -f qcow2 -b <image> -F <format> <overlay> [size]``: without
    ``size``, or with the image's own, the overlay is as large as the image; a larger
    ``size`` grows it (the guest then sees the extra space unpartitioned). The file is
    made under a temporary name and linked into place, so a crash never leaves a
    half-made overlay.

    :raise ConfigError: ``size`` is smaller than the image's virtual size.
    :raise NotFoundError: the overlay's directory does not exist.
    :raise AlreadyExists: ``overlay`` exists (it is never replaced).
    :raise RuntimeFailure / HostError: qemu-img failed, or is missing.
    """
    from maqet_engine.images.cache import short
    from maqet_engine.storage import qemu_img  # subprocess & co: only when used

    target = Path(overlay)
    check_size(image, size)
    if not target.parent.is_dir():
        raise NotFoundError(f"cannot create overlay {target}: directory {target.parent} "
                            "does not exist", hint="create it first")
    if os.path.lexists(target):
        raise AlreadyExists(f"overlay {target} exists already",
                            hint="remove it to start again from the image")
    grow = size if size is not None and size > image.virtual_size else None
    temporary = target.with_name(f".{target.name}.maqet-{os.urandom(6).hex()}.tmp")
    try:
        qemu_img.create(temporary, "qcow2", size=grow, backing=str(image.path),
                        backing_fmt=image.format,
                        what=f"create overlay {target} on image {short(image.digest)}")
        os.chmod(temporary, C.PRIVATE_FILE_MODE)  # guest data: the owner's only
        os.link(temporary, target)  # never replaces a file made meanwhile
    except FileExistsError as err:
        raise AlreadyExists(f"overlay {target} exists already",
                            hint="remove it to start again from the image") from err
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
    return grow if grow is not None else image.virtual_size
