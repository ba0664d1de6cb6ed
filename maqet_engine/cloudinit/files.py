"""Writing the seed image (and known_hosts) atomically, and only when it changed.

A reader (QEMU opening the seed, ssh reading known_hosts) sees the old file or the new
one, never a mix: the data goes to a new temporary file in the same directory
(``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600), is fsynced, renamed over the target, and the
directory is fsynced. When the target already holds exactly these bytes nothing is
written, so its mtime does not move and nothing downstream sees a change.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import NamedTuple

from maqet_engine import constants as C
from maqet_engine.cloudinit.seed import Seed
from maqet_engine.errors import HostError

__all__ = ["SeedImage", "write_atomic", "write_seed"]


class SeedImage(NamedTuple):
    """Where a seed image is, the sha256 of its bytes, and whether this call wrote it."""

    path: Path
    sha256: str
    changed: bool


def write_seed(seed: Seed, path: str | os.PathLike[str]) -> SeedImage:
    """Write ``seed`` as an ISO image labelled ``cidata`` at ``path`` (see module doc).

    :raise HostError: the file cannot be written (permissions, missing directory, disk full).
    """
    data = seed.image()
    target = Path(path)
    changed = write_atomic(target, data)
    return SeedImage(path=target, sha256=hashlib.sha256(data).hexdigest(), changed=changed)


def write_atomic(path: Path, data: bytes, *, mode: int = C.CLOUD_INIT_FILE_MODE) -> bool:
    """Replace ``path`` with ``data`` atomically; False when it already held ``data``.

    An unchanged file keeps its mtime; only its permission bits are set to ``mode``.
    :raise HostError: the file cannot be written.
    """
    try:
        if _holds(path, data):
            if stat.S_IMODE(os.lstat(path).st_mode) != mode:
                os.chmod(path, mode, follow_symlinks=False)
            return False
        _replace(path, data, mode)
    except OSError as err:
        raise HostError(f"cannot write {path}: {err.strerror or err}",
                        hint="check that its directory exists and is writable and that "
                        "the disk has room") from err
    return True


def _holds(path: Path, data: bytes) -> bool:
    """Whether ``path`` is a regular file (not a symlink) whose bytes are ``data``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        if err.errno == errno.ELOOP:  # a symlink: replace it, never follow it
            return False
        raise
    with os.fdopen(fd, "rb") as existing:
        info = os.fstat(existing.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
            return False
        return hashlib.sha256(existing.read()).digest() == hashlib.sha256(data).digest()


def _replace(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # the umask may have taken bits away; set exactly
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
