"""What every CLI handler gets: paths, output mode, the engine context."""

from __future__ import annotations

import sys

from maqet_engine.cli.output import dump_json
from maqet_engine.frozen import Frozen
from maqet_engine.paths import Paths
from maqet_engine.store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from maqet_engine.engine.context import EngineContext


class CLIContext(Frozen):
    """Built once per command by ``cli.main``."""

    __slots__ = ("paths", "json", "debug")
    paths: Paths
    json: bool
    debug: bool

    def engine(self, *, check_mode: bool = False) -> EngineContext:
        from maqet_engine.engine.context import EngineContext

        return EngineContext(paths=self.paths, check_mode=check_mode)

    def store(self, *, create: bool = False) -> Store:
        return Store.open(self.paths.db, create=create)

    def emit(self, data: Any, human: str | None = None) -> None:
        """Print ``data`` as JSON with --json, else the human text (if any)."""
        if self.json:
            dump_json(data)
        elif human:
            print(human)

    def progress(self, message: str) -> None:
        """One progress line on stderr for slow steps (TTY only, never in --json)."""
        if not self.json and sys.stderr.isatty():
            print(f"{message}...", file=sys.stderr, flush=True)
