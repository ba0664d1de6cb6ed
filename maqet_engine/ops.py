"""Operation ids: one per engine call, so every trace of it can be found again.

A front end makes one per command (the CLI) or module run (the collection), or takes
one from its user; it rides in the :class:`~maqet_engine.engine.EngineContext`. Inside
one process the id of the operation being served lives in :data:`current` (a
``ContextVar``: each asyncio task and each thread sees its own), set by the facade
for the length of a call and by the runner for the length of one request. Between
processes it travels explicitly: the ``op`` field of an IPC request, the runner's
``--op`` argument. What it marks:

- the events the operation causes (the store's ``events.op_id``),
- the engine's decision lines and the runner's log lines while it handles a request,
- the Result (``op_id``), the modules' return values and ``maqet events --op ID``.

Cheap on purpose (no logging, no dataclasses): ``maqet ls`` imports it.
"""

from __future__ import annotations

import contextvars
import os

from maqet_engine import constants as C
from maqet_engine.errors import UsageError

current: contextvars.ContextVar[str | None] = contextvars.ContextVar("maqet_op", default=None)


def new_op_id() -> str:
    """A fresh operation id: ``OP_ID_BYTES`` random bytes as hex (12 digits)."""
    return os.urandom(C.OP_ID_BYTES).hex()


def is_valid(op_id: object) -> bool:
    return isinstance(op_id, str) and C.OP_ID_RE.fullmatch(op_id) is not None


def check(op_id: object) -> str:
    """``op_id`` when it is a valid operation id, else a UsageError saying why."""
    if not is_valid(op_id):
        raise UsageError(f"operation id {op_id!r} is not valid", hint=C.OP_ID_HELP)
    assert isinstance(op_id, str)
    return op_id


def current_op() -> str | None:
    """The id of the operation this task or thread is serving (None outside one)."""
    return current.get()
