# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of maqet_snapshot and maqet_snapshot_info (private to this collection).

All snapshot calls into the engine are isolated in :class:`SnapshotAPI`, the one
adapter between these modules and maqet_engine's snapshot API (issue 4)::

    maqet_engine.snapshots.api.apply_snapshot(ctx, *, vm, name, state, drive=None,
                                              live=None, retention=None, timeout=300.0)
        state: "present" | "absent" | "reverted"; honours ctx.check_mode;
        result.to_dict() -> {"vm", "name", "state", "changed", "actions", "drive", "live",
                             "snapshot": dict | None, "snapshots": [...], "pruned": [names]}
    maqet_engine.snapshots.api.list_snapshots(ctx, vm, drive=None) -> list[dict]
        each: {"name", "drive" (None: VM-wide), "drives", "complete", "created_at",
               "vm_state" (RAM and device state included), "vm_state_size", "size",
               "vm_clock", "managed", "recorded_at"}

The same names re-exported by ``maqet_engine.engine`` are preferred when present. When
the installed engine has neither, the modules fail with one line that says which
engine version is needed.
"""

from __future__ import annotations

from ansible_collections.maqet.vm.plugins.module_utils._engine import (
    argument_spec,
    context,
    engine_version,
    require_engine,
    run,
)

SNAPSHOT_STATES = ("present", "absent", "reverted")

SNAPSHOT_ARGUMENT_SPEC = argument_spec(
    vm={"type": "str", "required": True},
    name={"type": "str", "required": True, "aliases": ["snapshot"]},
    state={"type": "str", "default": "present", "choices": list(SNAPSHOT_STATES)},
    drive={"type": "str"},
    live={"type": "bool"},
    retention={"type": "int"},
    timeout={"type": "float", "default": 300.0},
)

SNAPSHOT_INFO_ARGUMENT_SPEC = argument_spec(
    vm={"type": "str", "required": True},
    name={"type": "str", "aliases": ["snapshot"]},
    drive={"type": "str"},
)


class SnapshotAPI:
    """The engine's snapshot calls, or one clear failure when the engine lacks them."""

    def __init__(self, module):
        self.module = module
        found = _find_api()
        if found is None:
            module.fail_json(msg=missing_snapshot_api_message(), error_type="MissingEngineAPI")
        self._apply, self._list = found

    def apply(self, ctx, **params):
        return self._apply(ctx, **params).to_dict()

    def list(self, ctx, vm, *, drive=None):
        return list(self._list(ctx, vm, drive=drive))


# Where the engine keeps its snapshot API, in order of preference.
_API_MODULES = ("maqet_engine.engine", "maqet_engine.snapshots.api")


def _find_api():
    """(apply_snapshot, list_snapshots) of the installed engine, or None."""
    import importlib

    for name in _API_MODULES:
        try:
            module = importlib.import_module(name)
            return module.apply_snapshot, module.list_snapshots
        except (ImportError, AttributeError):
            continue
    return None


def missing_snapshot_api_message():
    return (
        "snapshots need a newer maqet engine (one with "
        "maqet_engine.snapshots.api.apply_snapshot and list_snapshots); the installed "
        "maqet_engine {0} lacks them: upgrade maqet on this host".format(engine_version())
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
        drive=data.get("drive"),
        live=data.get("live"),
        snapshot=data.get("snapshot"),
        snapshots=list(data.get("snapshots") or []),
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
