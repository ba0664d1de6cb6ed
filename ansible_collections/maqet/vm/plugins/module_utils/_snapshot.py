# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of maqet_snapshot and maqet_snapshot_info (private to this collection).

All snapshot calls into the engine are isolated in :class:`SnapshotAPI`, the one
adapter between these modules and maqet_engine's snapshot API (issue 4). The
engine API this adapter expects::

    maqet_engine.engine.apply_snapshot(ctx, *, vm, name, state, drive=None, live=None,
                                       retention=None, timeout=30.0) -> result
        state: "present" | "absent" | "reverted"; honours ctx.check_mode;
        result.to_dict() -> {"vm", "name", "state", "changed", "actions",
                             "snapshot": dict | None, "pruned": [names]}
    maqet_engine.engine.list_snapshots(ctx, vm, *, drive=None) -> list[dict]
        each: {"name", "vm", "drive" (None: VM-wide live snapshot), "vm_state" (bool:
               RAM and device state included), "created_at", "size"}

When the installed engine has no such API, the modules fail with one line that says
which engine version is needed.
"""

from __future__ import annotations

from ansible_collections.maqet.vm.plugins.module_utils._engine import (
    argument_spec,
    context,
    engine_version,
    require_engine,
    run,
)

SNAPSHOT_ENGINE_MIN_VERSION = "0.2.0"
SNAPSHOT_STATES = ("present", "absent", "reverted")

SNAPSHOT_ARGUMENT_SPEC = argument_spec(
    vm={"type": "str", "required": True},
    name={"type": "str", "required": True, "aliases": ["snapshot"]},
    state={"type": "str", "default": "present", "choices": list(SNAPSHOT_STATES)},
    drive={"type": "str"},
    live={"type": "bool"},
    retention={"type": "int"},
    timeout={"type": "float", "default": 30.0},
)
SNAPSHOT_EXCLUSIVE = [("drive", "live")]

SNAPSHOT_INFO_ARGUMENT_SPEC = argument_spec(
    vm={"type": "str", "required": True},
    name={"type": "str", "aliases": ["snapshot"]},
    drive={"type": "str"},
)


class SnapshotAPI:
    """The engine's snapshot calls, or one clear failure when the engine lacks them."""

    def __init__(self, module):
        self.module = module
        try:
            from maqet_engine.engine import apply_snapshot, list_snapshots
        except (ImportError, AttributeError):
            module.fail_json(msg=missing_snapshot_api_message(), error_type="MissingEngineAPI")
        self._apply = apply_snapshot
        self._list = list_snapshots

    def apply(self, ctx, **params):
        return self._apply(ctx, **params).to_dict()

    def list(self, ctx, vm, *, drive=None):
        return list(self._list(ctx, vm, drive=drive))


def missing_snapshot_api_message():
    return (
        "snapshots need maqet_engine >= {0} (maqet_engine.engine.apply_snapshot and "
        "list_snapshots); the installed one is {1}: upgrade maqet on this host".format(
            SNAPSHOT_ENGINE_MIN_VERSION, engine_version())
    )


def run_snapshot(module):
    """Body of maqet_snapshot."""
    require_engine(module)
    params = module.params
    if params["retention"] is not None and params["retention"] < 1:
        module.fail_json(msg="retention must be at least 1")
    api = SnapshotAPI(module)
    ctx = context(module)
    data = run(module, lambda: api.apply(
        ctx, vm=params["vm"], name=params["name"], state=params["state"],
        drive=params["drive"], live=params["live"], retention=params["retention"],
        timeout=params["timeout"]), vm=params["vm"])
    module.exit_json(
        changed=bool(data.get("changed")),
        vm=params["vm"],
        name=params["name"],
        state=params["state"],
        actions=list(data.get("actions") or []),
        snapshot=data.get("snapshot"),
        pruned=list(data.get("pruned") or []),
    )


def run_snapshot_info(module):
    """Body of maqet_snapshot_info (never changes anything)."""
    require_engine(module)
    params = module.params
    api = SnapshotAPI(module)
    ctx = context(module, check_mode=True)
    snapshots = run(module, lambda: api.list(ctx, params["vm"], drive=params["drive"]),
                    vm=params["vm"])
    if params["name"]:
        snapshots = [s for s in snapshots if s.get("name") == params["name"]]
    module.exit_json(changed=False, vm=params["vm"], snapshots=snapshots)
