"""The TTY progress bar of slow snapshot operations (cli/progress.py) and how the
snapshot API drives it: drawn in place after the delay, erased when done, never on a
non-TTY or with --json. A fake TTY stream signals each frame, so nothing sleeps."""

from __future__ import annotations

import io
import threading

import pytest

from maqet_engine.cli.progress import Indeterminate, TTYProgress, bar_frame, tty_progress
from maqet_engine.snapshots import api


class FakeTTY(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.frames = threading.Semaphore(0)

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes.append(text)
        if text.startswith("\r["):
            self.frames.release()
        return super().write(text)


def test_frame_bounces_and_counts_seconds():
    first = bar_frame("saving snapshot s1", 0.0, width=8, tick=1.0)
    assert first == "[<=>     ] saving snapshot s1... 0.0s"
    assert bar_frame("saving snapshot s1", 5.0, width=8, tick=1.0).startswith("[     <=>]")
    assert bar_frame("m", 7.0, width=8, tick=1.0).startswith("[   <=>  ]")  # on its way back
    assert bar_frame("m", 12.34, width=8).endswith(" 12.3s")


def test_frame_never_wraps():
    frame = bar_frame("loading snapshot " + "x" * 200, 3.0, columns=60)
    assert len(frame) == 59 and frame.endswith("… 3.0s")
    assert len(bar_frame("y" * 50, 1.0, columns=20)) <= 19


def test_bar_redraws_in_place_then_erases_itself():
    tty = FakeTTY()
    with Indeterminate(tty, "saving snapshot s1", after=0.0, tick=0.01) as bar:
        for _ in range(3):  # three frames drawn while the "operation" runs
            assert tty.frames.acquire(timeout=10)
    assert bar.frames >= 3
    assert all(w.startswith("\r[") for w in tty.writes[:-1])
    assert "saving snapshot s1..." in tty.writes[0]
    assert tty.writes[-1] == "\r\x1b[K"  # erased: the result line starts clean


def test_fast_operation_shows_nothing():
    tty = FakeTTY()
    with Indeterminate(tty, "quick", after=60.0, tick=0.01) as bar:
        pass
    assert bar.frames == 0 and tty.getvalue() == ""


def test_only_on_a_tty_and_never_with_json():
    assert isinstance(tty_progress(False, FakeTTY()), TTYProgress)
    assert tty_progress(True, FakeTTY()) is None
    assert tty_progress(False, io.StringIO()) is None


def test_the_api_covers_the_operation_with_a_tracker():
    tty = FakeTTY()
    tracker = TTYProgress(tty, after=0.0, tick=0.01)
    assert isinstance(tracker, api.Tracker)
    with api._progress_after(tracker, "deleting snapshot s1 of disk hdd"):
        assert tty.frames.acquire(timeout=10)
    assert "deleting snapshot s1 of disk hdd" in tty.writes[0]
    assert tty.writes[-1] == "\r\x1b[K"


@pytest.mark.parametrize("progress", [None, print])
def test_plain_callables_and_none_still_work(progress: object):
    with api._progress_after(progress, "x"):  # type: ignore[arg-type]
        pass


@pytest.mark.parametrize("json_output", [False, True])
def test_cli_passes_the_tty_bar_unless_json(json_output: bool, tmp_path: object,
                                            monkeypatch: pytest.MonkeyPatch):
    import argparse

    import maqet_engine.snapshots as snapshots
    from maqet_engine.cli.context import CLIContext
    from maqet_engine.cli.snapshot_cmds import cmd_snapshot
    from maqet_engine.engine import Result

    seen: dict[str, object] = {}

    def fake_ensure(ctx: object, vm: str, name: str, **kwargs: object) -> Result:
        seen.update(kwargs)
        return Result(name=vm, state="present")

    monkeypatch.setattr(snapshots, "ensure_snapshot", fake_ensure)
    monkeypatch.setattr("sys.stderr", FakeTTY())
    ctx = CLIContext(base=None, json=json_output, debug=False)  # type: ignore[arg-type]
    monkeypatch.setattr(CLIContext, "engine", lambda self, check_mode=False: None)
    args = argparse.Namespace(name="vm1", action="create", operands=["s1"], retention=None,
                              timeout=5.0, check=False)
    cmd_snapshot(args, ctx)
    assert isinstance(seen["progress"], TTYProgress) is not json_output
