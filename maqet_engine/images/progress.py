"""Download progress: the rate limit on the caller's callback, and a TTY bar for it.

:meth:`ImageCache.fetch <maqet_engine.images.cache.ImageCache.fetch>` reports through
``progress(done_bytes, total_bytes_or_None)``, at most ~10 times a second
(:class:`Throttle`): once at the start, then every
:data:`~maqet_engine.constants.IMAGE_PROGRESS_INTERVAL_S`, and once at the end. Unlike
the snapshot jobs' bouncing bar (``cli/progress.py``), a download knows how far it got,
so :class:`TTYBar` draws a real percentage when the server sent a length.
"""

from __future__ import annotations

import os
import time

from maqet_engine import constants as C

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

    Progress = Callable[[int, int | None], None]

_CLEAR = "\r\x1b[K"  # to the line start, erase to its end
_UNITS = ("KiB", "MiB", "GiB", "TiB")


def human_size(size: float) -> str:
    """``512 B``, ``1.5 MiB``: binary units, one decimal."""
    if size < 1024:
        return f"{int(size)} B"
    for unit in _UNITS:
        size /= 1024
        if size < 1024 or unit == _UNITS[-1]:
            break
    return f"{size:.1f} {unit}"


class Throttle:
    """Passes ``(done, total)`` on to ``callback`` at most once per ``interval``, except
    for the first call and the ``final`` one, which always go through."""

    def __init__(self, callback: Progress, *, interval: float = C.IMAGE_PROGRESS_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.callback = callback
        self.interval = interval
        self.clock = clock
        self._last: float | None = None

    def __call__(self, done: int, total: int | None, *, final: bool = False) -> None:
        now = self.clock()
        if final or self._last is None or now - self._last >= self.interval:
            self._last = now
            self.callback(done, total)


def bar_frame(message: str, done: int, total: int | None, elapsed: float, *,
              columns: int = 80, width: int = 20) -> str:
    """One frame (no ``\\r``), cut to ``columns - 1`` so it never wraps::

        [#########...........]  45% 12.0 MiB/26.7 MiB 3.1 MiB/s message
        12.0 MiB 3.1 MiB/s message                       (length unknown)
    """
    rate = f"{human_size(done / elapsed)}/s" if elapsed > 0 else ""
    if total:
        ratio = min(done / total, 1.0)
        filled = int(ratio * width)
        head = (f"[{'#' * filled}{'.' * (width - filled)}] {int(ratio * 100):3d}% "
                f"{human_size(done)}/{human_size(total)}")
    else:
        head = human_size(done)
    frame = " ".join(part for part in (head, rate, message) if part)
    return frame[:max(columns - 1, 0)]


class TTYBar:
    """A ``progress`` callback that redraws one line in place on a terminal; use it as
    a context manager so the line is erased at the end (whatever happened)."""

    def __init__(self, stream: TextIO, message: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.message = message
        self.clock = clock
        self.start = clock()
        self.frames = 0

    def __call__(self, done: int, total: int | None) -> None:
        try:  # a terminal without a size (a bare pty, a serial line) says 0
            columns = os.get_terminal_size(self.stream.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            columns = 80
        frame = bar_frame(self.message, done, total, self.clock() - self.start,
                          columns=columns)
        self._write("\r" + frame)
        self.frames += 1

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal: the display just stops
            pass

    def __enter__(self) -> TTYBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.frames:
            self._write(_CLEAR)
