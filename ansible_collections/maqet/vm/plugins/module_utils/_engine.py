# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one door from the modules to the maqet engine (private to this collection).

Everything that touches ``maqet_engine`` from a module goes through here: the guarded
import (a missing engine is a one-line failure that says how to install it), the
shared options (paired with the ``maqet.vm.common`` doc fragment), the engine
context, and the conversion of engine errors into ``fail_json``.

Each module run is one maqet operation: its ``op_id`` option, or an id the engine makes
for the run (no task uuid reaches a module's parameters). It is kept in
``module.params["op_id"]``, so every engine call of the run shares it, and every
result, failed or not, returns it.
"""

from __future__ import annotations

import traceback

try:
    import maqet_engine
    from maqet_engine.engine import EngineContext
    from maqet_engine.errors import MaqetError
except ImportError:  # the engine is not installed for this interpreter
    HAS_MAQET_ENGINE = False
    MAQET_ENGINE_IMPORT_ERROR = traceback.format_exc()
    maqet_engine = None
    EngineContext = None

    class MaqetError(Exception):  # type: ignore[no-redef]
        """Placeholder so ``except MaqetError`` works without the engine."""

else:
    HAS_MAQET_ENGINE = True
    MAQET_ENGINE_IMPORT_ERROR = None

# Shared options of every module; documented by the maqet.vm.common doc fragment.
COMMON_ARGUMENT_SPEC = {
    "maqet_home": {"type": "path"},
    "op_id": {"type": "str"},
}

# Fields of MaqetError.to_dict() that are passed on to the task result.
_ERROR_FIELDS = ("exit_code", "path", "command", "error_class", "desc")


def argument_spec(**options):
    """The module's own options plus the shared ones."""
    spec = dict(COMMON_ARGUMENT_SPEC)
    spec.update(options)
    return spec


def require_engine(module):
    """Fail the task in one line when maqet_engine cannot be imported."""
    if HAS_MAQET_ENGINE:
        return
    module.fail_json(
        msg=missing_engine_message(),
        exception=MAQET_ENGINE_IMPORT_ERROR,
        error_type="MissingEngine",
    )


def engine_version():
    return getattr(maqet_engine, "__version__", "unknown") if HAS_MAQET_ENGINE else None


def context(module, *, check_mode=None):
    """The engine context for this task: its maqet_home, check mode and operation id
    (see the module docstring). A malformed op_id fails the task in one line."""
    if check_mode is None:
        check_mode = module.check_mode
    try:
        ctx = EngineContext.for_home(module.params.get("maqet_home"), check_mode=check_mode,
                                     op_id=module.params.get("op_id") or None)
    except MaqetError as err:
        fail_from_error(module, err)
    module.params["op_id"] = ctx.op_id  # the same for every call of this run
    return ctx


def operation_id(module):
    """This run's operation id (None before the first :func:`context`)."""
    params = getattr(module, "params", None) or {}
    return params.get("op_id")


def exit_task(module, **result):
    """``exit_json`` with this run's operation id."""
    result.setdefault("op_id", operation_id(module))
    module.exit_json(**result)


def fail_from_error(module, err, **extra):
    """Fail the task with the engine error's one-line message and its type. When the
    engine had already changed something (a definition stored before QEMU failed to
    start), the task says so: ``changed`` and the ``actions`` done."""
    result = dict(extra)
    partial = getattr(err, "result", None)
    if partial is not None and partial.changed:
        result["changed"] = True
        result["actions"] = [dict(a) for a in partial.actions]
    to_dict = getattr(err, "to_dict", None)
    data = to_dict() if callable(to_dict) else {}
    for key in _ERROR_FIELDS:
        if data.get(key) not in (None, ""):
            result[key] = data[key]
    result["error_type"] = type(err).__name__
    if operation_id(module):
        result["op_id"] = operation_id(module)
    module.fail_json(msg=str(err), **result)


def run(module, operation, **extra):
    """Call ``operation()``; engine errors fail the task, the rest is a bug."""
    try:
        return operation()
    except MaqetError as err:
        fail_from_error(module, err, **extra)


def missing_engine_message():
    """One line, in the spirit of ``missing_required_lib``, that says what to do."""
    import sys

    return (
        "the maqet engine (Python package maqet_engine) is not installed for {0}: run "
        "'{0} -m pip install maqet' on this host, or point ansible_python_interpreter at "
        "a Python that has it".format(sys.executable)
    )
