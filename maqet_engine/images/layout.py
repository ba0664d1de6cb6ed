"""The cache's files on disk: directories, per-name locks, temporary files, sidecars.

::

    <root>/                          0700
      sha256/                        0700
        <hex>                        a cached image, mode 0400; its presence is the commit
        <hex>.json                   its sidecar (written before the image is renamed in)
        .<lock name>.<token>.part    an image being written
        .<lock name>.<token>.json    a sidecar being written
      locks/                         0700
        <hex>.lock                   flock: whoever holds it may write <hex>
        path-<32 hex>.lock           flock: one copy at a time of one local file
                                     (a lock file exists only while it is held)

Rules that make it safe without a daemon:

- A temporary file is only created while holding the lock its name starts with, so
  whoever holds that lock may delete every such file: it belongs to a dead process
  (the kernel drops a killed holder's flock). No age guessing, and never a race with a
  live download.
- Nothing is followed through a symlink: temporary files are created ``O_EXCL`` (which
  refuses any existing name, a symlink included), locks and sidecars are opened
  ``O_NOFOLLOW``, images are checked with ``lstat``, and ``rename`` replaces a name
  without following it.
- A lock file is deleted by its holder when it lets go; whoever then acquires the
  old, unlinked file notices (its inode is no longer the one at the path) and opens
  the path again.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import HostError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_SIDECAR_MAX_BYTES = 1024 * 1024
_WRITABLE_HINT = "make it writable by this user, or use another data directory"


def is_digest(name: str) -> bool:
    return len(name) == C.IMAGE_DIGEST_HEX_LEN and all(c in "0123456789abcdef" for c in name)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Lock:
    """An exclusive flock on ``locks/<name>.lock``, held while the context is entered."""

    def __init__(self, layout: Layout, name: str,
                 on_wait: Callable[[], None] | None = None) -> None:
        self.layout = layout
        self.name = name
        self.on_wait = on_wait
        self.fd: int | None = None

    def acquire(self, *, blocking: bool = True) -> bool:
        import fcntl

        path = self.layout.lock_path(self.name)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             C.IMAGE_TEMP_MODE)
            except OSError as err:
                raise self.layout.write_error(path, err) from err
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not blocking:
                        os.close(fd)
                        return False
                    if self.on_wait is not None:
                        self.on_wait()
                    fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                try:
                    now = os.lstat(path)
                except FileNotFoundError:
                    now = None
            except BaseException:
                os.close(fd)
                raise
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                self.fd = fd
                return True
            os.close(fd)  # its holder deleted it meanwhile: lock the new one

    def release(self) -> None:
        """Delete the lock file, then let go (closing it drops the flock). Deleting it
        while held is safe (see the module docstring), and no lock files pile up."""
        if self.fd is None:
            return
        try:
            os.unlink(self.layout.lock_path(self.name))
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Layout:
    """Paths and file operations of one cache root (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / C.IMAGE_OBJECTS_DIR
        self.locks = root / C.IMAGE_LOCKS_DIR

    def image(self, digest: str) -> Path:
        return self.objects / digest

    def sidecar(self, digest: str) -> Path:
        return self.objects / f"{digest}{C.IMAGE_SIDECAR_SUFFIX}"

    def lock_path(self, name: str) -> Path:
        return self.locks / f"{name}.lock"

    def lock(self, name: str, on_wait: Callable[[], None] | None = None) -> Lock:
        return Lock(self, name, on_wait)

    def write_error(self, path: Path, err: OSError) -> HostError:
        if err.errno == errno.ELOOP:
            return HostError(f"{path} is a symlink; the image cache never follows one",
                             hint="remove it, and check who else can write to "
                             f"{self.root}")
        return HostError(f"cannot write to the image cache {path.parent}: {err.strerror}",
                         hint=_WRITABLE_HINT)

    # --- directories ----------------------------------------------------------------
    def ensure(self) -> None:
        """Create the root and its directories, mode 0700; refuse symlinked ones.

        :raise HostError: they cannot be created, or one is not a directory.
        """
        for directory in (self.root, self.objects, self.locks):
            try:
                directory.mkdir(mode=C.IMAGE_CACHE_DIR_MODE, parents=directory is self.root,
                                exist_ok=True)
                info = os.lstat(directory) if directory is not self.root else \
                    os.stat(directory)
                if not stat.S_ISDIR(info.st_mode):
                    raise HostError(f"{directory} is not a directory (a symlink?)",
                                    hint=f"remove it; the image cache under {self.root} "
                                    "creates it")
                if stat.S_IMODE(info.st_mode) != C.IMAGE_CACHE_DIR_MODE:
                    os.chmod(directory, C.IMAGE_CACHE_DIR_MODE)
            except FileExistsError as err:  # mkdir on a dangling symlink or a file
                raise HostError(f"{directory} is not a directory",
                                hint=f"remove it; the image cache under {self.root} "
                                "creates it") from err
            except OSError as err:
                raise HostError(f"cannot create the image cache directory {directory}: "
                                f"{err.strerror}", hint=_WRITABLE_HINT) from err

    def digests(self) -> list[str]:
        """The digests of the images present (their sidecars aside)."""
        try:
            names = os.listdir(self.objects)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(name for name in names if is_digest(name))

    # --- temporary files --------------------------------------------------------------
    def new_temp(self, name: str, suffix: str) -> tuple[int, Path]:
        """A new, empty temporary file ``.<name>.<token>.<suffix>`` (mode 0600), open
        for reading and writing. The caller must hold lock ``name``."""
        for _attempt in range(8):
            path = self.objects / f".{name}.{os.urandom(8).hex()}.{suffix}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, C.IMAGE_TEMP_MODE)
            except FileExistsError:
                continue
            except OSError as err:
                raise self.write_error(path, err) from err
            return fd, path
        raise HostError(f"cannot create a temporary file in {self.objects}: every name "
                        "tried exists", hint=f"check who else writes to {self.root}")

    def scrub(self, name: str) -> list[Path]:
        """Delete the temporary files of lock ``name`` (the caller holds it), and, for a
        digest, a sidecar left without its image. Returns what was deleted."""
        removed: list[Path] = []
        prefix = f".{name}."
        try:
            names = os.listdir(self.objects)
        except FileNotFoundError:
            return removed
        candidates = [self.objects / n for n in names if n.startswith(prefix)]
        if is_digest(name) and not os.path.lexists(self.image(name)):
            candidates.append(self.sidecar(name))
        for path in candidates:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append(path)
        return removed

    def temp_owners(self) -> set[str]:
        """Lock names that have temporary files."""
        try:
            names = os.listdir(self.objects)
        except FileNotFoundError:
            return set()
        return {n.split(".")[1] for n in names if n.startswith(".") and n.count(".") == 3}

    def lock_names(self) -> set[str]:
        try:
            names = os.listdir(self.locks)
        except FileNotFoundError:
            return set()
        return {n.removesuffix(".lock") for n in names if n.endswith(".lock")}

    # --- sidecars --------------------------------------------------------------------
    def read_sidecar(self, digest: str) -> dict[str, Any] | None:
        """The sidecar's data, or None when it is missing, unreadable or not what this
        cache writes (the caller then rebuilds it from the image)."""
        import json

        try:
            fd = os.open(self.sidecar(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            data = json.loads(os.read(fd, _SIDECAR_MAX_BYTES))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        valid = (isinstance(data, dict) and data.get("digest") == digest
                 and data.get("format") in ("qcow2", "raw")
                 and isinstance(data.get("virtual_size"), int)
                 and isinstance(data.get("fetched_at"), int | float)
                 and isinstance(data.get("pins", []), list))
        return data if valid else None

    def write_sidecar(self, digest: str, data: dict[str, Any]) -> None:
        """Replace the sidecar atomically (the caller holds lock ``digest``).

        :raise HostError: it cannot be written (disk full, read-only).
        """
        import json

        payload = json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"
        fd, temp = self.new_temp(digest, "json")
        try:
            try:
                write_all(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, self.sidecar(digest))
        except OSError as err:
            raise HostError(f"cannot write {self.sidecar(digest)}: {err.strerror}",
                            hint="free some space there" if err.errno == errno.ENOSPC
                            else _WRITABLE_HINT) from err
        finally:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
