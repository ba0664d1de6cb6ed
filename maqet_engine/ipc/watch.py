"""Waiting for a file to change with inotify (no polling, no sleeps): set the watch up
first, then cause the change, then wait for it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import time
from pathlib import Path

from maqet_engine import constants as C

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CREATE = 0x00000100
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


def inotify(path: Path, mask: int) -> int:
    """An inotify descriptor (close-on-exec) watching ``path`` for ``mask``; the caller
    closes it.

    :raise OSError: inotify cannot be set up, or ``path`` cannot be watched.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init1(_IN_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1 failed")
    if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"cannot watch {path}")
    return fd


class DirectoryWatch:
    """Changes of the files in ``directory``: attribute changes (chmod) unless ``mask``
    names other inotify events (``IN_MODIFY``: written, e.g. a SQLite WAL)."""

    def __init__(self, directory: Path, mask: int = IN_ATTRIB) -> None:
        self.directory = directory
        self._mask = mask
        self._fd = -1

    def __enter__(self) -> DirectoryWatch:
        self._fd = inotify(self.directory, self._mask)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def wait_for(self, name: str, *, timeout: float) -> bool:
        """True once ``name`` in the directory had its attributes changed (or what
        ``mask`` watches happened to it); every event read meanwhile is consumed. False
        after ``timeout`` seconds without it."""
        wanted = os.fsencode(name)
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while (remaining := deadline - time.monotonic()) > 0:
            if not poller.poll(remaining * 1000):
                return False
            data = os.read(self._fd, C.INOTIFY_READ_BYTES)
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                if data[offset:offset + length].rstrip(b"\0") == wanted:
                    return True
                offset += length
        return False
