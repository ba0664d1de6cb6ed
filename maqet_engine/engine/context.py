"""What every engine call needs: where the installation lives, and check mode."""

from __future__ import annotations

import os
from dataclasses import dataclass

from maqet_engine import constants as C
from maqet_engine.paths import Paths, resolve_paths
from maqet_engine.store import Store


@dataclass(frozen=True)
class EngineContext:
    paths: Paths
    check_mode: bool = False

    @classmethod
    def from_env(cls, *, check_mode: bool = False) -> EngineContext:
        return cls(paths=resolve_paths(), check_mode=check_mode)

    @classmethod
    def for_home(cls, home: str | None, *, check_mode: bool = False) -> EngineContext:
        """Context for an explicit ``MAQET_HOME`` (None: the environment's)."""
        paths = resolve_paths({**os.environ, C.ENV_HOME: home} if home else None)
        return cls(paths=paths, check_mode=check_mode)

    def open_store(self, *, create: bool) -> Store:
        """Open the state store; reads pass ``create=False`` and never make files."""
        return Store.open(self.paths.db, create=create)
