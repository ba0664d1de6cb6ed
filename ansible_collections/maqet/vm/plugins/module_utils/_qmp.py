# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of maqet_qmp (private to this collection): one request to the VM's runner.

Every request is one call of the engine's facade (``qmp``, ``send_keys``,
``type_text``, ``screendump``); the module never talks to QEMU's QMP socket itself,
and ``changed`` is the engine's: read-only commands (``query-*`` and friends) never
change anything, input (keys, text) always does, a screendump only when the picture
differs from ``dest``.
"""

from __future__ import annotations

from ansible_collections.maqet.vm.plugins.module_utils._engine import (
    argument_spec,
    context,
    exit_task,
    require_engine,
    run,
)

SCREENDUMP_FORMATS = ("png", "ppm")

QMP_ARGUMENT_SPEC = argument_spec(
    vm={"type": "str", "required": True, "aliases": ["name"]},
    command={"type": "str"},
    arguments={"type": "dict", "default": {}},
    read_only={"type": "bool"},
    keys={"type": "list", "elements": "str", "no_log": False},
    text={"type": "str"},
    screendump={"type": "path", "aliases": ["dest"]},
    screendump_format={"type": "str", "default": "png", "choices": list(SCREENDUMP_FORMATS)},
    timeout={"type": "float", "default": 30.0},
)
QMP_EXCLUSIVE = [("command", "keys", "text", "screendump")]
QMP_REQUIRED_ONE_OF = [("command", "keys", "text", "screendump")]


def request(module):
    """The task's one engine call; returns the task result."""
    from maqet_engine import engine

    params = module.params
    ctx = context(module)
    vm, timeout = params["vm"], params["timeout"]
    if params["command"]:
        read_only = params["read_only"]
        if read_only is None:
            read_only = engine.is_read_only(params["command"])
        result = engine.qmp(ctx, vm, params["command"], params["arguments"],
                            read_only=read_only, timeout=timeout)
        task = {"changed": result.changed, "command": params["command"],
                "read_only": read_only}
        if not (module.check_mode and not read_only):
            task["result"] = result.data
        return task
    if params["keys"] is not None:
        result = engine.send_keys(ctx, vm, params["keys"], timeout=timeout)
        return {"changed": True, "sent": (result.data or {}).get("sent")}
    if params["text"] is not None:
        result = engine.type_text(ctx, vm, params["text"], timeout=timeout)
        return {"changed": True, "sent": (result.data or {}).get("sent")}
    result = engine.screendump(ctx, vm, params["screendump"],
                               image_format=params["screendump_format"], timeout=timeout)
    return {"changed": result.changed, "dest": result.data["path"],
            "format": result.data["format"], "checksum": result.data["checksum"]}


def run_qmp(module):
    """Body of maqet_qmp."""
    require_engine(module)
    exit_task(module, **run(module, lambda: request(module), vm=module.params["vm"]))
