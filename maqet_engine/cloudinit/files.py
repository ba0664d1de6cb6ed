"""Writing the seed image (and known_hosts) atomically, and only when it changed.

A reader (QEMU opening the seed, ssh reading known_hosts) sees the old file or the new
one, never a mix: the data goes to a new temporary file in the same directory
(``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600), is fsynced, renamed over the target, and the
directory is fsynced.

Nothing is written when the target already holds what would be written, so its mtime
and inode do not move and nothing downstream sees a change. For known_hosts that means
the same bytes. For the seed image it means the same *files*: the image's bytes carry
pycdlib's timestamps and differ on every build, so :func:`write_seed` reads the existing
image back (:func:`maqet_engine.cloudinit.image.holds`) and keeps it when its label and
its ``user-data``, ``meta-data`` and ``network-config`` are exactly the seed's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from maqet_engine import constants as C
from maqet_engine.durable import fsync_dir
from maqet_engine.errors import HostError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from maqet_engine.cloudinit.seed import Seed

__all__ = ["SeedImage", "write_atomic", "write_seed"]

_COMPARE_CHUNK = 65536


class SeedImage(NamedTuple):
    """Where a seed image is, the sha256 of its bytes, and whether this call wrote it."""

    path: Path
    sha256: str
    changed: bool


def write_seed(seed: Seed, path: str | os.PathLike[str]) -> SeedImage:
    """Write ``seed`` as an ISO image labelled ``cidata`` at ``path`` (see module doc).

    When ``path`` already holds this seed's files it is left alone (only its mode is set
    to 0600) and ``sha256`` is that of the existing image.
    :raise HostError: the file cannot be written (permissions, missing directory, disk full).
    """
    import hashlib  # here: known_hosts writers (the runner) never load libcrypto

    from maqet_engine.cloudinit.image import holds

    target = Path(path)
    mode = C.CLOUD_INIT_FILE_MODE
    with _host_error(target):
        with _open_regular(target) as existing:
            if existing is not None and holds(existing, seed.files(), label=C.CLOUD_INIT_LABEL):
                existing.seek(0)
                digest = hashlib.file_digest(existing, "sha256").hexdigest()
                _set_mode(target, mode)
                return SeedImage(path=target, sha256=digest, changed=False)
        data = seed.image()
        _replace(target, data, mode)
    return SeedImage(path=target, sha256=hashlib.sha256(data).hexdigest(), changed=True)


def write_atomic(path: Path, data: bytes, *, mode: int = C.CLOUD_INIT_FILE_MODE) -> bool:
    """Replace ``path`` with ``data`` atomically; False when it already held ``data``.

    An unchanged file keeps its mtime; only its permission bits are set to ``mode``.
    :raise HostError: the file cannot be written.
    """
    with _host_error(path):
        with _open_regular(path) as existing:
            if existing is not None and _same_bytes(existing, data):
                _set_mode(path, mode)
                return False
        _replace(path, data, mode)
    return True


@contextlib.contextmanager
def _host_error(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise HostError(f"cannot write {path}: {err.strerror or err}",
                        hint="check that its directory exists and is writable and that "
                        "the disk has room") from err


@contextlib.contextmanager
def _open_regular(path: Path) -> Iterator[BinaryIO | None]:
    """``path`` opened for reading if it is a regular file (never through a symlink:
    a symlink is replaced, not followed); None when it is missing or anything else."""
    fd = _open_nofollow(path)
    if fd is None:
        yield None
        return
    with os.fdopen(fd, "rb") as existing:
        yield existing if stat.S_ISREG(os.fstat(existing.fileno()).st_mode) else None


def _open_nofollow(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:  # a symlink
            return None
        raise


def _same_bytes(existing: BinaryIO, data: bytes) -> bool:
    """Whether the open file holds exactly ``data`` (compared piece by piece: no hashing,
    so no libcrypto in the processes that write known_hosts)."""
    if os.fstat(existing.fileno()).st_size != len(data):
        return False
    view = memoryview(data)
    offset = 0
    while chunk := existing.read(_COMPARE_CHUNK):
        if view[offset:offset + len(chunk)] != chunk:
            return False
        offset += len(chunk)
    return offset == len(data)


def _set_mode(path: Path, mode: int) -> None:
    if stat.S_IMODE(os.lstat(path).st_mode) != mode:
        os.chmod(path, mode, follow_symlinks=False)


def _replace(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")  # not secrets: no hmac
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
    fsync_dir(path.parent)

