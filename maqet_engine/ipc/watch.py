"""Waiting for a file to change in a directory with inotify (no polling, no sleeps):
set the watch up first, then cause the change, then wait for it."""

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
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class DirectoryWatch:
    """Changes of the files in ``directory``: attribute changes (chmod) unless ``mask``
    names other inotify events (``IN_MODIFY``: written, e.g. a SQLite WAL)."""

    def __init__(self, directory: Path, mask: int = IN_ATTRIB) -> None:
        self.directory = directory
        self._mask = mask
        self._fd = -1

    def __enter__(self) -> DirectoryWatch:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._fd = libc.inotify_init1(_IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self._fd, os.fsencode(self.directory), self._mask) < 0:
            err = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(err, f"cannot watch {self.directory}")
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def wait_for(self, name: str, *, timeout: float) -> bool:
        """True once ``name`` in the directory had its attributes changed (or what
        ``mask`` watches happened to it); False after ``timeout`` seconds without it."""
        return self.wait_any((name,), timeout=timeout)

    def wait_any(self, names: tuple[str, ...], *, timeout: float) -> bool:
        """True once any of ``names`` changed (see :meth:`wait_for`); every event read
        meanwhile is consumed. False after ``timeout`` seconds without one."""
        wanted = {os.fsencode(name) for name in names}
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
                if data[offset:offset + length].rstrip(b"\0") in wanted:
                    return True
                offset += length
        return False
