"""serial_wait's matching (runner/serial.py) against a real Unix socket playing QEMU's
serial chardev: no QEMU, no mocks. A client's pattern can never hold the event loop
longer than ``SERIAL_MATCH_BUDGET_S``, and normal waits keep their meaning."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Awaitable
from typing import Any

import pytest
from chardev import drain_of  # tests/support

from maqet_engine import constants as C
from maqet_engine.errors import OperationTimeout, UsageError
from maqet_engine.runner import serial
from maqet_engine.runner.serial import SerialDrain

CATASTROPHIC = r"(a|a)*@@@"  # 2**n steps on a line of n 'a's (~4 s for 25 under old code)
A_LINE = "a" * 25 + "\n"


async def until_offset(drain: SerialDrain, offset: int) -> None:
    """Wait (on the drain's own wake-ups) until the drain has read up to ``offset``."""
    await drain.wait(r"(?s).", since=offset - 1, timeout=5)


async def max_stall(work: Awaitable[Any]) -> tuple[Any, float]:
    """Run ``work`` while a heartbeat task measures the longest the loop went without
    running it: (work's result or exception, longest gap in seconds)."""
    gaps = [0.0]
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    try:
        outcome: Any = await work
    except Exception as err:  # noqa: BLE001 - returned for the test to inspect
        outcome = err
    stop.set()
    await beat
    return outcome, max(gaps)


def test_catastrophic_pattern_is_refused_within_the_budget_and_the_loop_keeps_running(
        tmp_path):
    async def main() -> tuple[Any, float, float]:
        async with drain_of(tmp_path) as (drain, chardev):
            await chardev.send("boot\n" + A_LINE)
            await until_offset(drain, 5 + len(A_LINE))
            started = time.monotonic()
            outcome, stall = await max_stall(drain.wait(CATASTROPHIC, since=0, timeout=30))
            return outcome, stall, time.monotonic() - started

    outcome, stall, elapsed = asyncio.run(main())
    assert isinstance(outcome, UsageError), outcome
    assert "catastrophically" in str(outcome)
    # The loop was held for one budget (CPU time; the wall clock may add a little).
    assert stall < C.SERIAL_MATCH_BUDGET_S + 0.4, stall
    assert elapsed < 2.0, elapsed


def test_catastrophic_pattern_honours_a_timeout_shorter_than_the_budget(tmp_path):
    async def main() -> tuple[Any, float]:
        async with drain_of(tmp_path) as (drain, chardev):
            await chardev.send(A_LINE)
            await until_offset(drain, len(A_LINE))
            started = time.monotonic()
            with pytest.raises(OperationTimeout) as info:
                await drain.wait(CATASTROPHIC, since=0, timeout=0.03)
            return info.value, time.monotonic() - started

    error, elapsed = asyncio.run(main())
    assert "within 0.03 s" in str(error)
    assert elapsed < 0.5, elapsed


def test_many_long_scans_hold_the_loop_one_slice_at_a_time(tmp_path):
    """16 waits over a full buffer of lines that never match, and one for a line that
    comes last: they search in slices of SERIAL_MATCH_SLICE_S, one slice per pass of the
    loop (before: each wait scanned the whole buffer at once, 16 x ~70 ms in a row)."""
    line = "[    1.234567] virtio_blk virtio1: [vda] 2097152 512-byte logical blocks\r\n"
    text = line * (C.SERIAL_BUFFER_CHARS // len(line) - 1)

    async def main() -> tuple[Any, float]:
        async with drain_of(tmp_path) as (drain, chardev):
            await chardev.send(text)
            await until_offset(drain, len(text))

            async def scans() -> Any:
                never = [asyncio.ensure_future(drain.wait(rf"never-{n}", since=0, timeout=60))
                         for n in range(16)]
                done = asyncio.ensure_future(drain.wait(r"^done$", since=0, timeout=60))
                await chardev.send("done\r\n")
                try:
                    return await done
                finally:
                    for wait in never:
                        wait.cancel()
                    await asyncio.gather(*never, return_exceptions=True)

            return await max_stall(scans())

    outcome, stall = asyncio.run(main())
    assert outcome == {"match": "done", "offset": len(text) + len("done\r\n")}
    assert stall < 0.25, stall


def test_waits_keep_their_meaning(tmp_path):
    """Line by line (line ends as str.splitlines sees them), escapes and CR stripped,
    offsets at the end of the matching line, an unfinished line matched as it grows, a
    match split across chunks. The expected values are what the code before the
    incremental search answered for the same exchange."""
    async def main() -> list[dict[str, object]]:
        async with drain_of(tmp_path) as (drain, chardev):
            await chardev.send("\x1b[6nfirst line\r\nsecond")
            results = [await drain.wait(r"^first line$", since=0, timeout=5)]
            results.append(await drain.wait(r"second", since=0, timeout=5))  # unfinished
            waiter = asyncio.ensure_future(drain.wait(r"^third \d+$", since=0, timeout=5))
            await chardev.send(" half\r\nthi")
            await chardev.send("rd 42\r\n")
            results.append(await waiter)
            results.append(await drain.wait(r"^second half$", since=13, timeout=5))
            await chardev.send("x\ry\x0bz\x0cw\r")
            results.append(await drain.wait(r"^y", since=0, timeout=5))
            results.append(await drain.wait(r"^w", since=0, timeout=5))
            await chardev.send("\nlast\n")
            results.append(await drain.wait(r"^last$", since=0, timeout=5))
            with pytest.raises(OperationTimeout):  # since: after the only 'first'
                await drain.wait(r"first", since=16, timeout=0.05)
            return results

    assert asyncio.run(main()) == [
        {"match": "first line", "offset": 16}, {"match": "second", "offset": 22},
        {"match": "third 42", "offset": 39}, {"match": "second half", "offset": 29},
        {"match": "y", "offset": 43}, {"match": "w", "offset": 47},
        {"match": "last", "offset": 53},
    ]


@pytest.mark.parametrize(("pattern", "reason"), [
    ("(" * 2000 + "a" + ")" * 2000, "nested too deeply"),
    ("a{99999999999999}", "too large"),
    ("[", "unterminated"),
    ("x" * (C.SERIAL_PATTERN_MAX_CHARS + 1), "longer than"),
])
def test_bad_patterns_are_usage_errors(tmp_path, pattern, reason):
    async def main() -> None:
        async with drain_of(tmp_path) as (drain, _chardev):
            await drain.wait(pattern, since=0, timeout=1)

    with pytest.raises(UsageError) as info:
        asyncio.run(main())
    assert reason in str(info.value)
    assert len(str(info.value)) < 400


def test_no_garbage_collection_is_charged_to_a_pattern(tmp_path):
    """Compiling and searching run under a CPU budget of SERIAL_MATCH_BUDGET_S; a
    collection falling into one (tens of milliseconds in a big heap) would be charged to
    the pattern and refuse a good one. Collections forced at every allocation here: none
    runs inside a budget, and the pattern compiles and matches."""
    inside: list[str] = []

    def collection(phase: str, _info: dict[str, int]) -> None:
        if phase == "start" and serial._BUDGET._armed:  # the CPU timer runs
            inside.append(sys._getframe(1).f_code.co_name)

    async def main() -> dict[str, object]:
        async with drain_of(tmp_path) as (drain, chardev):
            await chardev.send("boot\nlogin: ok\n" + "filler line\n" * 5000)
            threshold = gc.get_threshold()
            gc.callbacks.append(collection)
            gc.set_threshold(1)
            try:
                return await drain.wait(r"^(login|user)[:]\s+(\w+)$", since=0, timeout=5)
            finally:
                gc.set_threshold(*threshold)
                gc.callbacks.remove(collection)

    assert asyncio.run(main()) == {"match": "login: ok", "offset": 15}
    assert inside == []
