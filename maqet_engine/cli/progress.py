"""A TTY progress display for slow operations: an indeterminate bar with elapsed seconds.

QEMU's snapshot jobs report only 0/1 progress, and qemu-img none at all, so a bar that
claimed a percentage would lie: this one bounces, and counts the seconds. It appears
only once the operation has run for ``after`` seconds, is redrawn in place (``\\r``) on
stderr every ``tick`` seconds, and is erased when the operation ends, so the command's
own output follows on a clean line. Only for a TTY and never with ``--json``
(:func:`tty_progress` returns None then).

The drawing thread is woken by a :class:`threading.Event` whose wait timeout is the
redraw tick; the event is set when the operation ends. It is display, not
synchronisation: nothing waits for the bar but its own clean-up.
"""

from __future__ import annotations

import os
import threading
import time

from maqet_engine import constants as C

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

_CLEAR = "\r\x1b[K"  # to the line start, erase to its end


def bar_frame(message: str, elapsed: float, *, width: int = C.PROGRESS_BAR_WIDTH,
              columns: int = 80, tick: float = C.PROGRESS_TICK_S) -> str:
    """One frame (no ``\\r``): ``[   <=>   ] message... 3.2s``, cut to fit ``columns``
    (a wrapped line could not be redrawn in place)."""
    span = width - 3
    step = int(elapsed / tick) % (2 * span) if span > 0 else 0
    at = step if step <= span else 2 * span - step
    bar = "[" + " " * at + "<=>" + " " * (span - at) + "]"
    seconds = f" {elapsed:.1f}s"
    room = columns - 1 - len(bar) - 1 - len(seconds)  # never the last column
    text = f"{message}..."
    if room < len(text):
        text = text[:max(room - 1, 0)] + ("…" if room > 0 else "")
    frame = f"{bar} {text}{seconds}"
    return frame[:max(columns - 1, 0)]  # a terminal narrower than the bar itself


class Indeterminate:
    """Context manager: the bar for one operation (see the module docstring)."""

    def __init__(self, stream: TextIO, message: str, *,
                 after: float = C.SNAPSHOT_PROGRESS_AFTER_S, tick: float = C.PROGRESS_TICK_S,
                 clock: Callable[[], float] = time.monotonic, noun: str = "image") -> None:
        self.stream = stream
        self.noun = noun  # what a transfer moves: "image 12M of 24M"
        self.message = message
        self.after = after
        self.tick = tick
        self.clock = clock
        self.frames = 0  # drawn so far
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maqet-progress", daemon=True)
        self._start = 0.0
        self._detail = ""  # what a transfer reports, shown after the message

    def frame(self, columns: int) -> str:
        """The frame to draw now: the message, with a transfer's progress after it."""
        detail = self._detail
        message = f"{self.message}: {detail}" if detail else self.message
        return bar_frame(message, self.clock() - self._start, columns=columns,
                         tick=self.tick)

    def transfer(self, done: int, total: int | None) -> None:
        """The engine's download progress callback (``done``, ``total`` bytes): shown
        after the message, e.g. ``starting web1: image 12M of 24M (50%)...``."""
        from maqet_engine.cli.output import human_size

        shown = f"{self.noun} {human_size(done)}"
        if total:
            shown += f" of {human_size(total)} ({min(done * 100 // total, 100)}%)"
        self._detail = shown  # one reference: the drawing thread reads it whole

    def _columns(self) -> int:
        try:  # a terminal without a size (a bare pty, a serial line) says 0
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            return 80

    def _run(self) -> None:
        if self._done.wait(self.after):
            return  # fast enough: nothing to show
        columns = self._columns()
        while True:
            self._write("\r" + self.frame(columns))
            self.frames += 1
            if self._done.wait(self.tick):
                return

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # closed or gone terminal: the display just stops
            self._done.set()

    def __enter__(self) -> Indeterminate:
        self._start = self.clock()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        if self.frames:
            self._write(_CLEAR)


class TTYProgress:
    """The snapshot API's progress tracker (``track(message)``) for a TTY stream."""

    def __init__(self, stream: TextIO, *, after: float = C.SNAPSHOT_PROGRESS_AFTER_S,
                 tick: float = C.PROGRESS_TICK_S) -> None:
        self.stream = stream
        self.after = after
        self.tick = tick

    def track(self, message: str, *, noun: str = "image") -> Indeterminate:
        return Indeterminate(self.stream, message, after=self.after, tick=self.tick,
                             noun=noun)


def tty_progress(json_output: bool, stream: TextIO) -> TTYProgress | None:
    """A tracker drawing on ``stream`` when it is a terminal and output is not JSON."""
    if json_output:
        return None
    try:
        if not stream.isatty():
            return None
    except (OSError, ValueError):
        return None
    return TTYProgress(stream)
