"""What every CLI handler gets: the engine context, the output mode, progress."""

from __future__ import annotations

import contextlib
import sys

from maqet_engine.cli.output import dump_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from maqet_engine.engine import EngineContext, Result

    Transfer = Callable[[int, int | None], None]


class CLIContext:
    """Built once per command by ``cli.main``."""

    __slots__ = ("base", "json", "debug")

    def __init__(self, *, base: EngineContext, json: bool, debug: bool) -> None:
        self.base = base
        self.json = json
        self.debug = debug

    def engine(self, *, check_mode: bool = False) -> EngineContext:
        """The engine context of this command (with check mode when asked)."""
        return self.base.with_check_mode(check_mode)

    def emit(self, data: Any, human: str | None = None) -> None:
        """Print ``data`` as JSON with --json, else the human text (if any)."""
        if self.json:
            dump_json(data)
        elif human:
            print(human)

    def emit_result(self, result: Result, unchanged: str = "unchanged") -> None:
        """A Result: its dict with --json, else ``NAME: changed (actions)``."""
        if self.json:
            dump_json(result.to_dict())
            return
        print(f"{result.name}: " + (f"changed ({', '.join(result.describe())})"
                                    if result.changed else unchanged))

    @contextlib.contextmanager
    def progress(self, message: str, *, noun: str = "image") -> Iterator[Transfer | None]:
        """A TTY progress bar for a step that may take more than a second (nothing with
        --json or when stderr is not a terminal). Yields the engine's ``progress``
        callback for a download during the step (the bar then shows how far it got, as
        ``NOUN 12M of 24M``), or None when there is no bar."""
        from maqet_engine.cli.progress import tty_progress

        tracker = tty_progress(self.json, sys.stderr)
        if tracker is None:
            yield None
            return
        with tracker.track(message, noun=noun) as bar:
            yield bar.transfer
