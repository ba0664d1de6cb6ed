"""The progress callback's rate limit and the TTY bar drawn from it."""

from __future__ import annotations

import io

from maqet_engine.images.progress import Throttle, TTYBar, bar_frame, human_size


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_passes_the_first_and_final_calls_and_one_per_interval():
    clock = Clock()
    seen: list[tuple[int, int | None]] = []
    report = Throttle(lambda done, total: seen.append((done, total)), interval=0.1,
                      clock=clock)
    report(0, 1000)
    for done in range(1, 1000):
        clock.now += 0.001  # 1000 chunks in one second
        report(done, 1000)
    report(1000, 1000, final=True)
    assert seen[0] == (0, 1000) and seen[-1] == (1000, 1000)
    assert 10 <= len(seen) <= 12
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_human_size():
    assert [human_size(n) for n in (0, 1023, 1024, 1536 * 1024, 3 * 2**30, 2**50)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 MiB", "3.0 GiB", "1024.0 TiB"]


def test_bar_frame_with_and_without_a_length():
    frame = bar_frame("debian.qcow2", 5 * 2**20, 10 * 2**20, 2.0, width=10)
    assert frame == "[#####.....]  50% 5.0 MiB/10.0 MiB 2.5 MiB/s debian.qcow2"
    assert bar_frame("x", 2048, None, 0.0) == "2.0 KiB x"
    assert len(bar_frame("y" * 200, 1, 2, 1.0, columns=40)) == 39


def test_tty_bar_redraws_in_place_and_erases_its_line():
    stream = io.StringIO()
    clock = Clock()
    with TTYBar(stream, "img", clock=clock) as bar:
        clock.now += 1.0
        bar(512, 1024)
        bar(1024, 1024)
    out = stream.getvalue()
    assert out.count("\r[") == 2 and "100%" in out
    assert out.endswith("\r\x1b[K")
    silent = io.StringIO()
    with TTYBar(silent, "img"):
        pass
    assert silent.getvalue() == ""
