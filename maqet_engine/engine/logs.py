"""Reading a VM's logs for ``maqet logs``: the tail, and following new output with
inotify (no polling). Synchronous and small: used by the CLI, not the runner."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import host_error
from maqet_engine.ipc.watch import IN_ATTRIB, IN_MODIFY, inotify


def tail_bytes(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The whole file, or its last ``lines`` lines; and the offset of its end."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        if lines is None:
            fh.seek(0)
            return fh.read(end), end
        start = max(0, end - C.LOG_TAIL_BYTES)
        fh.seek(start)
        data = fh.read(end - start)
    if lines <= 0:
        return b"", end
    kept = data.splitlines(keepends=True)[-lines:]
    return b"".join(kept), end


def follow(path: Path, offset: int) -> Iterator[bytes]:
    """New bytes appended to ``path`` after ``offset``, forever (Ctrl-C ends it).
    Blocks on inotify between writes; a truncated file is read again from its start."""
    if not path.exists():  # to be watched it must exist (a read-only home: say so)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        except OSError as err:
            raise host_error(err, "create the log to follow", path) from err
    fd = inotify(path, IN_MODIFY | IN_ATTRIB)
    try:
        while True:
            size = path.stat().st_size
            if size < offset:
                offset = 0
            if size > offset:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(min(size - offset, C.LOG_FOLLOW_CHUNK))
                offset += len(data)
                yield data
                continue
            events = os.read(fd, C.INOTIFY_READ_BYTES)  # blocks until the file changes
            struct.unpack_from("iIII", events)  # at least one whole event arrived
    finally:
        os.close(fd)
