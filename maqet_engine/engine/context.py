"""What every engine call needs: where the installation lives, and check mode."""

from __future__ import annotations

import os

from maqet_engine import constants as C
from maqet_engine.frozen import Frozen
from maqet_engine.paths import Paths, resolve_paths
from maqet_engine.store import Store


class EngineContext(Frozen):
    """Immutable; build it with :meth:`from_env`, :meth:`for_home` or
    ``EngineContext(paths=..., check_mode=...)``. (A :class:`Frozen` record, not a
    dataclass: ``maqet ls`` does not pay for importing dataclasses.)"""

    __slots__ = ("paths", "check_mode")
    paths: Paths
    check_mode: bool

    def __init__(self, *, paths: Paths, check_mode: bool = False) -> None:
        super().__init__(paths=paths, check_mode=check_mode)

    @classmethod
    def from_env(cls, *, check_mode: bool = False) -> EngineContext:
        return cls(paths=resolve_paths(), check_mode=check_mode)

    @classmethod
    def for_home(cls, home: str | None, *, check_mode: bool = False) -> EngineContext:
        """Context for an explicit ``MAQET_HOME`` (None: the environment's)."""
        paths = resolve_paths({**os.environ, C.ENV_HOME: home} if home else None)
        return cls(paths=paths, check_mode=check_mode)

    def with_check_mode(self, check_mode: bool) -> EngineContext:
        return self if check_mode == self.check_mode else EngineContext(
            paths=self.paths, check_mode=check_mode)

    def open_store(self, *, create: bool, verify: bool = True) -> Store:
        """Open the state store; reads pass ``create=False`` and never make files.

        :param verify: refuse a home, data directory or store that another user could
            change (:mod:`maqet_engine.trust`). Only the pure reads (``ls``, ``show``,
            ``status``) pass False: they run nothing and change nothing.
        :param create: make the home and data directory (0700) and the store (0600).
        """
        from maqet_engine import trust

        if verify:
            trust.check_installation(self.paths)
        if create:
            trust.make_private_dirs(self.paths)
            trust.make_private_file(self.paths.db)
        return Store.open(self.paths.db, create=create)
