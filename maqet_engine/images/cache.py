"""The content-addressed image cache: fetch, look up, list, remove, prune.

An image is stored once per content, as ``<root>/sha256/<hex>`` with a JSON sidecar
(source, format, virtual size, fetch time); :mod:`.layout` has the whole layout and
its locking rules. How a fetch finds the digest it is after:

- ``sha256:<hex>`` given: that is it.
- ``sha256:<SHA256SUMS URL>``: the digest is looked up in that file the first time,
  then *pinned*: the image's sidecar remembers (image URL, sums URL), and later fetches
  of the same pair use the cached image without any network I/O. A publisher that
  replaces the file behind the same URL is noticed only after the image is removed
  from the cache (``rm``/``prune``): a VM's base never changes behind its back.
- a local path (or ``file://``) without checksum: the file is **copied** into the
  cache, hashed on the way, and pinned by its (device, inode, size, mtime, ctime). The
  copy, not the file, backs the VMs: editing or deleting the original can never corrupt
  their overlays. A fetch of an unchanged file is then a hit without reading it; a
  changed file is copied (and hashed) again. A local file with a checksum is checked
  against it like a download.

A cache hit does no network I/O at all. A miss writes into a temporary file that is
renamed into place only once its digest matches and :mod:`.detect` accepted it as a
disk image: a partial, interrupted, mismatching or refused download never lands.
Two processes after the same digest share one flock: the second waits, then finds the
image (one download).
"""

from __future__ import annotations

import os
import stat

from maqet_engine import constants as C
from maqet_engine.durable import fsync_dir
from maqet_engine.errors import (
    ConfigError,
    ConflictError,
    HostError,
    NotFoundError,
    RuntimeFailure,
    UsageError,
)
from maqet_engine.frozen import Frozen
from maqet_engine.images.layout import Layout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path
    from typing import Any

    from maqet_engine.images.progress import Progress
    from maqet_engine.images.source import ImageSource

    InUse = Callable[[str], Iterable[str]]

_STAT_FIELDS = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")


def short(digest: str) -> str:
    """How messages show a digest: ``sha256:`` and its first 12 hex digits."""
    return f"{C.IMAGE_DIGEST_ALGORITHM}:{digest[:C.IMAGE_DIGEST_SHOWN]}"


class ImageEntry(Frozen):
    """One cached image. ``size`` is the file's size, ``virtual_size`` the disk's as the
    guest sees it; ``source`` is where it was first fetched from (None when its
    sidecar was lost); ``fetched_at`` is seconds since the epoch."""

    __slots__ = ("digest", "path", "size", "format", "virtual_size", "source", "fetched_at")
    digest: str
    path: Path
    size: int
    format: str
    virtual_size: int
    source: str | None
    fetched_at: float

    def to_dict(self) -> dict[str, Any]:
        """JSON shape for ``--json`` output and Ansible results."""
        data = {field: getattr(self, field) for field in self.__slots__}
        data["path"] = str(self.path)
        return data


class ImageCache:
    """The image cache under ``root`` (the engine passes ``<data dir>/images``).

    Reading methods (:meth:`lookup`, :meth:`ls`) work on a missing root and create
    nothing; :meth:`fetch` creates the directories (mode 0700).
    """

    def __init__(self, root: Path | str) -> None:
        from pathlib import Path

        self.root = Path(root)
        self._layout = Layout(self.root)

    # --- fetching ------------------------------------------------------------------
    def lookup(self, source: ImageSource) -> ImageEntry | None:
        """The cached image for ``source`` if there is one: no network, no writes, no
        waiting (for check mode). A SHA256SUMS source not fetched before is a miss."""
        digest = self._pinned(source)  # (source.digest first)
        return self._read_entry(digest) if digest is not None else None

    def fetch(self, source: ImageSource, *, progress: Progress | None = None) -> ImageEntry:
        """The cached image for ``source``, downloaded or copied first on a miss.

        :param progress: called as ``progress(done_bytes, total_bytes_or_None)`` while
            bytes are copied, at most ~10 times a second, the last time when all arrived.
        :raise ConfigError: checksum mismatch, no line for the image in its SHA256SUMS,
            or not a usable disk image (:func:`~maqet_engine.images.detect.detect_format`).
        :raise NotFoundError: no such local file, or HTTP 404/410.
        :raise RuntimeFailure: network failures (refused, DNS, TLS, HTTP errors, a cut
            connection; :class:`~maqet_engine.errors.OperationTimeout` for a stall).
        :raise HostError: disk full, an unwritable cache, a symlink planted in it.
        """
        layout = self._layout
        layout.ensure()
        pin: dict[str, Any] | None = None
        digest = self._pinned(source)  # (source.digest first)
        if digest is None and source.checksum_url is not None:
            digest = self._from_sums(source)
            pin = {"source": source.location, "checksum": source.checksum_url}
        if digest is None:
            return self._copy_unpinned(source, progress)
        with layout.lock(digest, on_wait=lambda: _waiting(digest)):
            entry = self._hit(digest, source, pin)
            if entry is not None:
                return entry
            layout.scrub(digest)  # left by a killed fetch: we hold its lock
            fd, temp = layout.new_temp(digest, "part")
            try:
                from maqet_engine.images.stream import copy_hashed
                from maqet_engine.images.transfer import open_source

                with open_source(source.location, what=_what(source)) as reader:
                    got = copy_hashed(reader, fd, layout.objects, progress=progress)
                if got != digest:
                    raise _mismatch(source, digest, got)
                return self._commit(fd, temp, digest, source, pin)
            finally:
                os.close(fd)
                _unlink(temp)

    def _copy_unpinned(self, source: ImageSource, progress: Progress | None) -> ImageEntry:
        """A local file without checksum: copy it, hashing, then file it by its digest.
        One copy of one path at a time (a second waits and then finds the pin)."""
        import hashlib

        from maqet_engine.images.stream import copy_hashed
        from maqet_engine.images.transfer import open_file

        layout = self._layout
        name = "path-" + hashlib.sha256(os.fsencode(source.location)).hexdigest()[:32]
        with layout.lock(name):
            pinned = self._pinned(source)  # again: a copy may have finished meanwhile
            if pinned is not None:
                with layout.lock(pinned):
                    entry = self._hit(pinned, source, None)
                if entry is not None:
                    return entry
            layout.scrub(name)
            fd, temp = layout.new_temp(name, "part")
            try:
                with open_file(source.location, what=_what(source)) as reader:
                    before = _stat_key(reader.stat)
                    digest = copy_hashed(reader, fd, layout.objects, progress=progress)
                    if _stat_key(os.fstat(reader.fd)) != before:
                        raise RuntimeFailure(f"{_what(source)}: it changed while it was "
                                             "copied", hint="try again once nothing writes it")
                pin = {"source": source.location, "stat": before}
                with layout.lock(digest, on_wait=lambda: _waiting(digest)):
                    entry = self._hit(digest, source, pin)
                    if entry is not None:
                        return entry
                    layout.scrub(digest)
                    return self._commit(fd, temp, digest, source, pin)
            finally:
                os.close(fd)
                _unlink(temp)

    def _from_sums(self, source: ImageSource) -> str:
        from maqet_engine.images.source import find_in_sums, sums_names
        from maqet_engine.images.transfer import read_small

        url = str(source.checksum_url)
        text = read_small(url, what=f"checksum file {url}")
        try:
            digest = find_in_sums(text, source.file_name)
        except ConfigError as err:
            raise ConfigError(f"{_what(source)}: {url}: {err.message}", hint=err.hint) from None
        if digest is None:
            listed = ", ".join(sums_names(text)) or "no sha256 lines at all"
            raise ConfigError(f"{_what(source)}: {url} has no sha256 line for "
                              f"{source.file_name!r} (it lists: {listed})",
                              hint="check that the checksum file belongs to this image, or "
                              "give checksum: sha256:<hex>")
        return digest

    def _hit(self, digest: str, source: ImageSource, pin: dict[str, Any] | None,
             ) -> ImageEntry | None:
        """The entry when the image is present (caller holds its lock): adds ``pin``,
        and rebuilds a lost sidecar."""
        layout = self._layout
        path = layout.image(digest)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode):
            raise HostError(f"{path} is not a regular file (a symlink?); the image cache "
                            "never follows one", hint=f"remove it, and check who else can "
                            f"write to {self.root}")
        data = layout.read_sidecar(digest)
        if data is None:
            from maqet_engine.images.detect import detect_format

            fmt = detect_format(path, what=f"cached image {short(digest)}")
            data = _sidecar(digest, fmt.format, fmt.virtual_size, info.st_size,
                            source.location, info.st_mtime)
            if pin is not None:
                data["pins"] = [pin]
            layout.write_sidecar(digest, data)
        elif pin is not None and pin not in data.get("pins", []):
            pins = [p for p in data.get("pins", [])
                    if isinstance(p, dict) and p.get("source") != pin["source"]]
            data["pins"] = [*pins, pin][-C.IMAGE_PINS_MAX:]
            layout.write_sidecar(digest, data)
        return _entry(path, info.st_size, data)

    def _commit(self, fd: int, temp: Path, digest: str, source: ImageSource,
                pin: dict[str, Any] | None) -> ImageEntry:
        """Accept the verified temporary file as image ``digest`` (lock held)."""
        import time

        from maqet_engine.images.detect import detect_fd

        layout = self._layout
        fmt = detect_fd(fd, what=_what(source))
        size = os.fstat(fd).st_size
        data = _sidecar(digest, fmt.format, fmt.virtual_size, size, source.location,
                        time.time())
        if source.checksum is not None:
            data["checksum"] = source.checksum
        if pin is not None:
            data["pins"] = [pin]
        try:
            os.fchmod(fd, C.IMAGE_FILE_MODE)
            layout.write_sidecar(digest, data)  # first: the image's arrival is the commit
            os.rename(temp, layout.image(digest))
            fsync_dir(layout.objects)
        except OSError as err:
            raise layout.write_error(temp, err) from err
        _log().info("cached %s as %s (%s, %d bytes)", source.location, short(digest),
                    fmt.format, size)
        return _entry(layout.image(digest), size, data)

    def _pinned(self, source: ImageSource) -> str | None:
        """The digest a sidecar remembers for this SHA256SUMS source or unchanged local
        file, if any."""
        if source.digest is not None:
            return source.digest
        if source.checksum_url is not None:
            want: dict[str, Any] = {"source": source.location, "checksum": source.checksum_url}
        elif not source.remote:
            try:
                want = {"source": source.location, "stat": _stat_key(os.stat(source.location))}
            except OSError:
                return None
        else:
            return None
        for digest in self._layout.digests():
            data = self._layout.read_sidecar(digest)
            if data is not None and want in data.get("pins", []):
                return digest
        return None

    # --- listing and removal -------------------------------------------------------
    def ls(self) -> list[ImageEntry]:
        """Every cached image, oldest fetch first."""
        entries = [e for e in map(self._read_entry, self._layout.digests()) if e is not None]
        return sorted(entries, key=lambda e: (e.fetched_at, e.digest))

    def hold(self, digest: str) -> Held:
        """Hold image ``digest``'s lock, as a context manager yielding its entry (None
        when it is not cached): while held, :meth:`rm` waits and :meth:`prune` passes
        it by. A start holds it while it makes an overlay on the image and registers
        that overlay, after which the overlay's backing file names the image."""
        return Held(self, digest)

    def digest_of(self, path: str | os.PathLike[str]) -> str | None:
        """The digest of the cached image ``path`` names (an overlay's backing file
        name), or None when it is not a file of this cache."""
        real = os.path.realpath(path)
        if os.path.dirname(real) != os.path.realpath(self._layout.objects):
            return None
        from maqet_engine.images.layout import is_digest

        name = os.path.basename(real)
        return name if is_digest(name) else None

    def rm(self, digest_or_prefix: str, in_use: InUse, *,
           check_mode: bool = False) -> ImageEntry:
        """Remove one image, named by its digest or an unambiguous prefix of at least 8
        hex digits (``sha256:`` optional).

        :param in_use: returns the names of the VMs that use a digest.
        :param check_mode: decide as a real removal would, but delete nothing.
        :raise ConflictError: VMs still use it (they are named).
        :raise NotFoundError: no such image.
        :raise UsageError: a prefix too short, not hex, or matching several images.
        """
        digest = self._resolve(digest_or_prefix)
        with self._layout.lock(digest):
            entry = self._read_entry(digest)
            if entry is None:
                raise NotFoundError(f"no cached image {short(digest)}")
            users = sorted(set(in_use(digest)))
            if users:
                vms = ("VM " if len(users) == 1 else "VMs ") + ", ".join(users)
                raise ConflictError(f"image {short(digest)} is in use by {vms}",
                                    hint="remove those VMs (or their disks on this image) "
                                    "first")
            if not check_mode:
                self._delete(digest)
        return entry

    def prune(self, in_use: InUse, *, check_mode: bool = False) -> list[ImageEntry]:
        """Remove every image no VM uses, and what killed fetches left behind (only
        where no process holds the lock: a fetch in progress is never disturbed).
        Returns the removed images (in check mode: those that would be, and nothing
        is deleted)."""
        layout = self._layout
        removed: list[ImageEntry] = []
        for entry in self.ls():
            lock = layout.lock(entry.digest)
            if not lock.acquire(blocking=False):
                continue  # being fetched, removed or used by a start right now
            try:
                if self._read_entry(entry.digest) is not None and \
                        not any(True for _ in in_use(entry.digest)):
                    if not check_mode:
                        self._delete(entry.digest)
                    removed.append(entry)
            finally:
                lock.release()
        if check_mode:
            return removed
        for name in layout.temp_owners() | layout.lock_names():
            lock = layout.lock(name)
            if not lock.acquire(blocking=False):
                continue
            layout.scrub(name)
            lock.release()
        return removed

    def _delete(self, digest: str) -> None:
        layout = self._layout
        try:
            os.unlink(layout.image(digest))  # first: the image's absence is the removal
            _unlink(layout.sidecar(digest))
            layout.scrub(digest)
        except OSError as err:
            raise layout.write_error(layout.image(digest), err) from err

    def _resolve(self, text: str) -> str:
        prefix = text.strip().lower().removeprefix(f"{C.IMAGE_DIGEST_ALGORITHM}:")
        if len(prefix) < C.IMAGE_DIGEST_PREFIX_MIN or len(prefix) > C.IMAGE_DIGEST_HEX_LEN \
                or any(c not in "0123456789abcdef" for c in prefix):
            raise UsageError(f"{text!r} is not an image digest",
                             hint=f"give at least {C.IMAGE_DIGEST_PREFIX_MIN} of its hex "
                             "digits")
        matches = [d for d in self._layout.digests() if d.startswith(prefix)]
        if not matches:
            raise NotFoundError(f"no cached image {C.IMAGE_DIGEST_ALGORITHM}:{prefix}",
                                hint="list the cached images to see their digests")
        if len(matches) > 1:
            shown = ", ".join(m[:C.IMAGE_DIGEST_SHOWN] for m in matches)
            raise UsageError(f"{C.IMAGE_DIGEST_ALGORITHM}:{prefix} matches {len(matches)} "
                             f"images ({shown})", hint="give more digits")
        return matches[0]

    def _read_entry(self, digest: str) -> ImageEntry | None:
        """The entry of a present image without locking or writing (a lost sidecar is
        made up from the file's header and time)."""
        path = self._layout.image(digest)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        data = self._layout.read_sidecar(digest)
        if data is None:
            from maqet_engine.images.detect import detect_format

            try:
                fmt = detect_format(path, what=f"cached image {short(digest)}")
            except (ConfigError, OSError):
                return None
            data = _sidecar(digest, fmt.format, fmt.virtual_size, info.st_size, None,
                            info.st_mtime)
        return _entry(path, info.st_size, data)


class Held:
    """:meth:`ImageCache.hold`: the image's lock while the ``with`` block runs."""

    def __init__(self, cache: ImageCache, digest: str) -> None:
        self.cache = cache
        self.lock = cache._layout.lock(digest, on_wait=lambda: _waiting(digest))
        self.digest = digest

    def __enter__(self) -> ImageEntry | None:
        self.cache._layout.ensure()
        self.lock.acquire()
        return self.cache._read_entry(self.digest)

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _sidecar(digest: str, fmt: str, virtual_size: int, size: int, source: str | None,
             fetched_at: float) -> dict[str, Any]:
    return {"digest": digest, "format": fmt, "virtual_size": virtual_size, "size": size,
            "source": source, "fetched_at": fetched_at}


def _entry(path: Path, size: int, data: dict[str, Any]) -> ImageEntry:
    return ImageEntry(digest=path.name, path=path, size=size, format=str(data["format"]),
                      virtual_size=int(data["virtual_size"]), source=data.get("source"),
                      fetched_at=float(data.get("fetched_at", 0.0)))


def _stat_key(info: os.stat_result) -> list[int]:
    return [int(getattr(info, field)) for field in _STAT_FIELDS]


def _what(source: ImageSource) -> str:
    return f"image {source.location}"


def _mismatch(source: ImageSource, expected: str, got: str) -> ConfigError:
    if source.checksum_url is not None:
        hint = (f"the file does not match its checksum file {source.checksum_url}: try again "
                "later (a mirror being updated?), or tell its publisher")
    else:
        hint = "fix the checksum, or the location if it names another file"
    return ConfigError(f"{_what(source)}: checksum mismatch: expected {short(expected)}, got "
                       f"{short(got)}", hint=hint)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _waiting(digest: str) -> None:
    _log().info("waiting for another process fetching image %s", short(digest))


def _log() -> Any:
    from maqet_engine.log import get_logger  # logging: not on the CLI's fast path

    return get_logger(__name__)
