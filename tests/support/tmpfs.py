"""A small real tmpfs for fault tests: fill it to a given free space, make it read-only.

Needs root (mount). The mount is always undone: :func:`small_tmpfs` unmounts in its
``finally`` even when the test failed, after killing (by PID) any process still using a
file below it (a runner or QEMU the test left behind would otherwise keep it busy).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

FILL_NAME = ".fill"  # the file that takes up space; its size sets what is left


class SmallFS:
    """A mounted tmpfs of a few MiB whose free space a test controls."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fill = root / FILL_NAME

    def free(self) -> int:
        """Bytes an unprivileged writer could still allocate."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def set_free(self, kib: int) -> int:
        """Grow or shrink the fill file so that ``kib`` KiB stay free; returns the bytes
        free afterwards (exact on tmpfs: it allocates in whole pages)."""
        want = kib * 1024
        fd = os.open(self.fill, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            target = max(0, size + self.free() - want)
            if target < size:
                os.ftruncate(fd, target)
            elif target > size:
                os.posix_fallocate(fd, size, target - size)
        finally:
            os.close(fd)
        return self.free()

    def unfill(self) -> None:
        """Give all the space back."""
        with contextlib.suppress(FileNotFoundError):
            self.fill.unlink()

    def remount(self, *, read_only: bool) -> None:
        _run("mount", "-o", f"remount,{'ro' if read_only else 'rw'}", str(self.root))

    @contextlib.contextmanager
    def read_only(self) -> Iterator[None]:
        """The whole filesystem read-only for the block (writable again after it)."""
        self.remount(read_only=True)
        try:
            yield
        finally:
            self.remount(read_only=False)


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


def _users_of(root: Path) -> list[int]:
    """PIDs (not ours) with an open file, cwd or mapping below ``root``."""
    prefix = str(root) + os.sep
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        links = []
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/{entry}/cwd"))
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    links.append(os.readlink(f"/proc/{entry}/fd/{fd}"))
        if any(link.startswith(prefix) for link in links):
            found.append(int(entry))
    return found


def unmount(root: Path) -> None:
    """Unmount ``root``: first kill (SIGKILL, by PID) what still uses it."""
    from procs import wait_pid_exit  # tests/support

    for pid in _users_of(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_pid_exit(pid, 5.0)
    try:
        _run("umount", str(root))
    except RuntimeError:
        # Still busy: this process holds a file there (a connection a failed test never
        # closed). Collect it; as the last resort detach the mount (freed when unused).
        import gc

        gc.collect()
        try:
            _run("umount", str(root))
        except RuntimeError:
            _run("umount", "--lazy", str(root))


@contextlib.contextmanager
def read_only_bind(path: Path) -> Iterator[None]:
    """``path`` (a file or a directory) read-only for the block, by a read-only bind
    mount of it onto itself; unmounted afterwards whatever happened."""
    _run("mount", "--bind", str(path), str(path))
    try:
        _run("mount", "-o", "remount,bind,ro", str(path))
        yield
    finally:
        _run("umount", str(path))


@contextlib.contextmanager
def small_tmpfs(size: str = "4m", *, prefix: str = "mqfd-") -> Iterator[SmallFS]:
    """A fresh tmpfs of ``size`` on a short new directory under /tmp (short, so that a
    MAQET_HOME on it keeps its runtime directory, sockets included, on it too)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(root))
        try:
            yield SmallFS(root)
        finally:
            unmount(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
