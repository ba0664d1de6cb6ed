"""Drains the VM's serial socket for the runner's whole life.

QEMU writes the UART into the socket byte by byte; nobody reading stalls the guest.
QEMU's own ``logfile=`` records the console in ``serial.log``; the runner keeps the
recent text in memory so clients can wait for output (``serial_wait``) without a
second reader on the socket (QEMU accepts only one) and without polling the file.

Offsets count characters received since this runner connected (a re-adopted VM
starts again at 0); ``serial_wait`` answers the offset after its match so a caller
can wait for the next thing after it.

Listeners (:meth:`SerialDrain.add_listener`) get every chunk of raw bytes as it arrives,
and ``b""`` when the console closes: ``maqet console`` viewers (:mod:`.console`).

A client's pattern must not stall the runner, which has one event loop for every
client. Python's ``re`` backtracks, and ``(a|a)*@@@`` takes time exponential in the
length of the line it searches. So:

- a wait searches incrementally: a complete line that did not match is never searched
  again (only the unfinished last line is, as it grows), and after
  ``SERIAL_MATCH_SLICE_S`` of searching it lets the event loop run before going on;
  waits take turns slice by slice, so the loop is never held by more than one slice
  however many waits search, and a search that overran its slice keeps the turn as
  long again while the loop serves other clients (searches get at most half the loop);
- every search runs under a CPU budget: an interval timer (``ITIMER_PROF``) sends
  SIGPROF after ``SERIAL_MATCH_BUDGET_S`` of CPU (or the wait's remaining time, if
  less), and ``re``, which checks for signals while it backtracks, stops with an
  exception. A pattern that needs more than the budget for one line is refused with a
  UsageError; the event loop was held for at most that long.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import gc
import logging
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import OperationTimeout, UsageError

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[@-Z\\-_]|\r")


def strip_escapes(text: str) -> str:
    """Terminal escape sequences and carriage returns removed (busybox's ESC[6n...)."""
    return _ESCAPES.sub("", text)


class _OverBudget(Exception):  # noqa: N818 - internal, never leaves this module
    """Raised by the SIGPROF handler into a search that used up its budget."""


class _SearchBudget:
    """A CPU-time limit around a synchronous piece of code in the main thread (the
    runner's event loop). Elsewhere (no signal handler can be installed) the code runs
    unlimited."""

    def __init__(self) -> None:
        self._armed = False
        self._installed: bool | None = None
        self._seconds = 0.0

    def _on_signal(self, _signum: int, _frame: object) -> None:
        if self._armed:
            self._armed = False
            raise _OverBudget

    def _install(self) -> bool:
        if self._installed is None:
            try:
                signal.signal(signal.SIGPROF, self._on_signal)
                self._installed = True
            except ValueError:  # not the main thread
                self._installed = False
        return self._installed

    def limit(self, seconds: float) -> _SearchBudget:
        """``with budget.limit(s):`` raises :class:`_OverBudget` inside the block after
        ``s`` seconds of CPU (not reentrant: searches never nest)."""
        self._seconds = seconds
        return self

    def __enter__(self) -> None:
        if self._install():
            self._armed = True
            signal.setitimer(signal.ITIMER_PROF, max(self._seconds, 0.001))

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            self._armed = False
            signal.setitimer(signal.ITIMER_PROF, 0)


_BUDGET = _SearchBudget()
# Line ends as str.splitlines() sees them (matching has always been line by line).
_LINE_END = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_LINE_ENDS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
_BLOCK_CHARS = 65536  # text split into lines at once (then the slice's time is checked)
_COMPILED: dict[str, re.Pattern[str]] = {}  # recent good patterns (compiled under budget)
_COMPILED_MAX = 256


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No garbage collection inside a CPU budget: the budget is the pattern's own work,
    and a collection falling into it (tens of milliseconds in a big heap) is not."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A client's serial pattern compiled, or a UsageError saying what is wrong."""
    regex = _COMPILED.get(pattern)
    if regex is not None:
        return regex
    if len(pattern) > C.SERIAL_PATTERN_MAX_CHARS:
        raise UsageError(f"serial pattern of {len(pattern)} characters is longer than "
                         f"{C.SERIAL_PATTERN_MAX_CHARS}")
    try:
        with _no_gc(), _BUDGET.limit(C.SERIAL_MATCH_BUDGET_S):
            regex = re.compile(pattern)
    except _OverBudget as err:
        raise UsageError(f"serial pattern {pattern[:200]!r} takes too long to compile") from err
    except (re.error, RecursionError, OverflowError, ValueError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise UsageError(f"bad serial pattern {pattern[:200]!r}: {reason}") from err
    if len(_COMPILED) >= _COMPILED_MAX:
        del _COMPILED[next(iter(_COMPILED))]
    _COMPILED[pattern] = regex
    return regex


class SerialDrain:
    def __init__(self, socket_path: Path, log: logging.Logger) -> None:
        self.socket_path = socket_path
        self._log = log
        self._text = ""
        self._base = 0  # offset of self._text[0] in the stream
        self._changed = asyncio.Event()  # set (and replaced) whenever text arrives
        self._scan_turn = asyncio.Lock()  # one search slice at a time (see _scan)
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._eof = False
        self._listeners: list[Callable[[bytes], None]] = []

    def add_listener(self, listener: Callable[[bytes], None]) -> None:
        """Call ``listener(chunk)`` with each chunk of console bytes received from now
        on, and ``listener(b"")`` when the console closes (at once if it is closed)."""
        self._listeners.append(listener)
        if self._eof:
            listener(b"")

    def remove_listener(self, listener: Callable[[bytes], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    @property
    def offset(self) -> int:
        return self._base + len(self._text)

    @property
    def changed(self) -> asyncio.Event:
        """Set (and replaced) when text next arrives or the console closes: a watcher
        takes it *before* looking at the text, then waits on it."""
        return self._changed

    @property
    def closed(self) -> bool:
        return self._eof

    def text(self, since: int, until: int | None = None) -> tuple[int, str]:
        """The raw text from offset ``since`` (or the oldest text still kept) to ``until``
        (or the end): ``(offset of its first character, text)``."""
        end = self.offset if until is None else min(until, self.offset)
        start = min(max(since, self._base), end)
        return start, self._text[start - self._base:end - self._base]

    def read(self, since: int, until: int | None, max_chars: int) -> dict[str, object]:
        """What the console printed between two offsets, escape sequences and carriage
        returns removed: the *last* ``max_chars`` of it when it is longer. ``since`` and
        ``until`` in the reply are the offsets really covered; ``truncated`` says that
        older text was cut (by this limit, or because the runner no longer keeps it)."""
        if since < 0 or (until is not None and until < since):
            raise UsageError(f"bad console range {since}..{until}",
                             hint="offsets count characters since the runner connected")
        start, text = self.text(since, until)
        end = start + len(text)
        if len(text) > max_chars:
            start, text = end - max_chars, text[-max_chars:]
        return {"text": strip_escapes(text), "since": start, "until": end,
                "offset": self.offset, "truncated": start > since}

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(str(self.socket_path))
        self._task = asyncio.create_task(self._drain(reader), name="serial-drain")

    def _notify(self) -> None:
        """Wake every wait (each holds the event that was current when it last looked)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                chunk = await reader.read(C.SERIAL_READ_CHUNK)
            except (ConnectionError, OSError) as err:
                self._log.debug("serial socket closed: %s", err)
                break
            if not chunk:
                break
            for listener in list(self._listeners):
                listener(chunk)
            self._text += decoder.decode(chunk)
            excess = len(self._text) - C.SERIAL_BUFFER_CHARS
            if excess > 0:
                self._text = self._text[excess:]
                self._base += excess
            self._notify()
        self._eof = True
        self._notify()  # wake waiters: the console is gone
        for listener in list(self._listeners):
            listener(b"")

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            raise UsageError("the serial console is not connected")
        self._writer.write(data)
        await self._writer.drain()

    async def wait(self, pattern: str, *, since: int, timeout: float) -> dict[str, object]:
        """Wait until ``pattern`` (a regex, matched line by line with escape sequences
        stripped) appears in the text received after offset ``since``. A pattern too
        slow to search (see the module doc) is a UsageError."""
        regex = compile_pattern(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        cursor = since  # lines before it were searched without a match
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    changed = self._changed
                    found, cursor = await self._scan(regex, cursor, deadline)
                    if found is not None:
                        return found
                    if self._eof:
                        raise OperationTimeout(f"serial console closed before {pattern!r}")
                    await changed.wait()
        except (TimeoutError, _OverBudget) as err:
            if isinstance(err, _OverBudget) and loop.time() < deadline:
                raise UsageError(
                    f"serial pattern {pattern[:200]!r} needs more than "
                    f"{C.SERIAL_MATCH_BUDGET_S:g} s to search one console line",
                    hint="it backtracks catastrophically: avoid nested or overlapping "
                         "repetition such as (a|a)* or (a+)+",
                ) from err
            raise OperationTimeout(
                f"{pattern[:200]!r} did not appear on the serial console within {timeout:g} s"
            ) from err

    async def _scan(self, regex: re.Pattern[str], cursor: int, deadline: float,
                    ) -> tuple[dict[str, object] | None, int]:
        """Search the text from offset ``cursor`` on, a slice at a time: (the match, or
        None and the offset of the first line that must be searched again)."""
        loop = asyncio.get_running_loop()
        while True:
            # Waits take turns (a fair lock), and a wait with more to search keeps its
            # turn through one pass of the event loop: other waits queue on the lock
            # instead of each running a slice in that pass, so however many waits
            # search, the loop runs other clients' work between any two slices.
            async with self._scan_turn:
                budget = min(C.SERIAL_MATCH_BUDGET_S, deadline - loop.time())
                started = time.monotonic()
                try:
                    with _no_gc(), _BUDGET.limit(budget):
                        found, cursor, finished = self._search_slice(regex, cursor)
                finally:
                    # A search that overran its slice (a pattern hitting the budget) keeps
                    # the turn as long again while the loop serves everyone else: searches
                    # take at most half the loop, however many clients send such patterns.
                    spent = time.monotonic() - started
                    if spent > 2 * C.SERIAL_MATCH_SLICE_S:
                        await asyncio.sleep(spent)
                if found is not None or finished:
                    return found, cursor
                await asyncio.sleep(0)  # the text may grow meanwhile: cursor is absolute

    def _search_slice(self, regex: re.Pattern[str], cursor: int,
                      ) -> tuple[dict[str, object] | None, int, bool]:
        """Search lines from offset ``cursor`` for about ``SERIAL_MATCH_SLICE_S``:
        (match, next cursor, whether the end of the text was reached). Complete lines
        are passed; the unfinished last line (a trailing CR may be half of a CRLF) is
        searched but not passed."""
        text, base = self._text, self._base
        size = len(text)
        position = max(cursor - base, 0)
        until = time.monotonic() + C.SERIAL_MATCH_SLICE_S
        while position < size:
            end = min(size, position + _BLOCK_CHARS)
            lines = text[position:end].splitlines(keepends=True)
            if end < size:
                if len(lines) > 1:
                    lines.pop()  # maybe cut short by the block: the next block has it
                else:  # one line longer than a block: all of it
                    line_end = _LINE_END.search(text, end - 1)
                    lines = [text[position:line_end.end() if line_end else size]]
            for line in lines:
                stop = position + len(line)
                complete = line[-1] in _LINE_ENDS and not (stop == size and line[-1] == "\r")
                found = regex.search(strip_escapes(line))
                if found:
                    return {"match": found.group(0), "offset": base + stop}, base + stop, True
                if not complete:
                    return None, base + position, True  # search it again when it grows
                position = stop
            if time.monotonic() >= until:
                return None, base + position, False
        return None, base + position, True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._writer is not None:
            self._writer.close()
        if not self._eof:
            for listener in list(self._listeners):
                listener(b"")
        self._eof = True
        self._notify()
