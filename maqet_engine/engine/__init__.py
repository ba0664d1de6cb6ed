"""The desired-state API every front end (CLI, Ansible modules, Python) shares.

``apply()`` converges one VM to ``present / running / stopped / restarted /
absent`` and returns a :class:`Result` (changed, diff, actions, the VM). With
``check_mode`` it computes the same result without side effects.

Names are resolved lazily (PEP 562) so that importing a light submodule such as
``engine.view`` does not pull in the spec package: ``maqet ls`` stays fast.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_EXPORTS = {
    "STATES": "maqet_engine.engine.api",
    "apply": "maqet_engine.engine.api",
    "define": "maqet_engine.engine.api",
    "load_spec": "maqet_engine.engine.api",
    "remove": "maqet_engine.engine.api",
    "EngineContext": "maqet_engine.engine.context",
    "Result": "maqet_engine.engine.result",
    "vm_view": "maqet_engine.engine.view",
    "qemu_argv": "maqet_engine.engine.view",
    "apply_snapshot": "maqet_engine.snapshots.api",
    "list_snapshots": "maqet_engine.snapshots.api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
