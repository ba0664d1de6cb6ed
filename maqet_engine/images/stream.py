"""Copying a source into a temporary file of the cache: hashed as it streams, bounded
chunks, progress reported, fsync'd, and a full disk turned into one clear error.

A download whose length is known is refused before the first byte when the cache's
file system has less room (as ``df`` counts it: the blocks an unprivileged user may
use); without a length, or when something else fills the disk meanwhile, the write that
fails with ``ENOSPC`` (or ``EDQUOT``) says how much had been written.
"""

from __future__ import annotations

import errno
import os

from maqet_engine import constants as C
from maqet_engine.errors import HostError
from maqet_engine.images.layout import write_all
from maqet_engine.images.progress import Throttle, human_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from maqet_engine.images.progress import Progress
    from maqet_engine.images.transfer import Reader

_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_HINT = "free some space there (remove unused images), or move the data directory"


def free_bytes(directory: Path) -> int:
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize


def copy_hashed(reader: Reader, fd: int, directory: Path, *,
                progress: Progress | None = None) -> str:
    """Copy everything ``reader`` gives into ``fd`` (an empty file in ``directory``),
    then fsync it. Returns the sha256 of what was copied (lower-case hex).

    :raise HostError: not enough space in ``directory`` (before starting when the length
        is known), or another write failure.
    :raise MaqetError: whatever ``reader`` raises (network, source file).
    """
    import hashlib

    what = reader.what
    total = reader.total
    if total is not None:
        free = free_bytes(directory)
        if total > free:
            raise HostError(f"{what}: not enough space in {directory}: the image needs "
                            f"{human_size(total)}, {human_size(free)} is free", hint=_FULL_HINT)
    digest = hashlib.sha256()
    report = Throttle(progress) if progress is not None else None
    if report is not None:
        report(0, total)
    written = 0
    try:
        while data := reader.read(C.IMAGE_READ_CHUNK):
            digest.update(data)
            write_all(fd, data)
            written += len(data)
            if report is not None:
                report(written, total)
        os.fsync(fd)
    except OSError as err:
        if err.errno in _FULL:
            free = free_bytes(directory) + written  # what there was before this download
            need = (f"the image needs {human_size(total)}, {human_size(free)} was free"
                    if total is not None else
                    f"it filled up after {human_size(written)} of the image")
            raise HostError(f"{what}: not enough space in {directory}: {need}",
                            hint=_FULL_HINT) from err
        raise HostError(f"{what}: cannot write to the image cache {directory}: "
                        f"{err.strerror}") from err
    if report is not None:
        report(written, total, final=True)
    return digest.hexdigest()
