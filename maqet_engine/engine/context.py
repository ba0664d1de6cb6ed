"""What every engine call needs: where the installation lives, check mode, and the
operation id that marks everything the call causes (:mod:`maqet_engine.ops`)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from maqet_engine import constants as C
from maqet_engine import ops
from maqet_engine.frozen import Frozen
from maqet_engine.paths import Paths, resolve_paths
from maqet_engine.store import Store

_Call = TypeVar("_Call", bound=Callable[..., Any])


class EngineContext(Frozen):
    """Immutable; build it with :meth:`from_env`, :meth:`for_home` or
    ``EngineContext(paths=..., check_mode=..., op_id=...)``. (A :class:`Frozen` record,
    not a dataclass: ``maqet ls`` does not pay for importing dataclasses.)

    ``op_id``: the operation id of the calls made with this context (one per CLI
    command or module run); None makes a fresh one. A given id must match
    ``OP_ID_RE`` (UsageError otherwise)."""

    __slots__ = ("paths", "check_mode", "op_id")
    paths: Paths
    check_mode: bool
    op_id: str

    def __init__(self, *, paths: Paths, check_mode: bool = False,
                 op_id: str | None = None) -> None:
        super().__init__(paths=paths, check_mode=check_mode,
                         op_id=ops.new_op_id() if op_id is None else ops.check(op_id))

    @classmethod
    def from_env(cls, *, check_mode: bool = False, op_id: str | None = None) -> EngineContext:
        return cls(paths=resolve_paths(), check_mode=check_mode, op_id=op_id)

    @classmethod
    def for_home(cls, home: str | None, *, check_mode: bool = False,
                 op_id: str | None = None) -> EngineContext:
        """Context for an explicit ``MAQET_HOME`` (None: the environment's)."""
        paths = resolve_paths({**os.environ, C.ENV_HOME: home} if home else None)
        return cls(paths=paths, check_mode=check_mode, op_id=op_id)

    def with_check_mode(self, check_mode: bool) -> EngineContext:
        return self if check_mode == self.check_mode else EngineContext(
            paths=self.paths, check_mode=check_mode, op_id=self.op_id)

    def with_op_id(self, op_id: str | None) -> EngineContext:
        """The same context under another operation id (None: a fresh one)."""
        return EngineContext(paths=self.paths, check_mode=self.check_mode, op_id=op_id)

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


def operation(call: _Call) -> _Call:
    """Run a facade call under its context's operation id: events it records, decision
    lines it logs and requests it sends to runners carry ``ctx.op_id``, and so does the
    :class:`~maqet_engine.engine.result.Result` it returns (``op_id``)."""

    @functools.wraps(call)
    def bound(ctx: EngineContext, *args: Any, **kwargs: Any) -> Any:
        op_id = getattr(ctx, "op_id", None)  # (a stand-in context may have none)
        token = ops.current.set(op_id)
        try:
            result = call(ctx, *args, **kwargs)
        finally:
            ops.current.reset(token)
        if hasattr(result, "op_id"):  # a Result (no import: this module stays light)
            result.op_id = op_id
        return result

    return bound  # type: ignore[return-value]
