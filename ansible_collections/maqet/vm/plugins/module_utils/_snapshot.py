# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of maqet_snapshot and maqet_snapshot_info (private to this collection).

One call of the engine's facade each: ``snapshot(ctx, vm, name, state=...)`` and
``list_snapshots(ctx, vm, drive)``. States and verbs (docs/glossary.md): present =
create, reverted = revert (always a change), absent = delete.
"""

from __future__ import annotations

from ansible_collections.maqet.vm.plugins.module_utils._engine import (
    argument_spec,
    context,
    exit_task,
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


def run_snapshot(module):
    """Body of maqet_snapshot."""
    require_engine(module)
    from maqet_engine import engine

    params = module.params
    if params["retention"] is not None and params["retention"] < 1:
        module.fail_json(msg="retention must be at least 1")
    ctx = context(module)
    result = run(module, lambda: engine.snapshot(
        ctx, params["vm"], params["name"], state=params["state"], drive=params["drive"],
        live=params["live"], retention=params["retention"], timeout=params["timeout"]),
        vm=params["vm"])
    data = result.data
    exit_task(
        module,
        changed=result.changed,
        vm=params["vm"],
        name=params["name"],
        state=params["state"],
        actions=[dict(a) for a in result.actions],
        drive=data.get("drive"),
        live=data.get("live"),
        snapshot=data.get("snapshot"),
        snapshots=list(data.get("snapshots") or []),
        pruned=list(data.get("pruned") or []),
    )


def run_snapshot_info(module):
    """Body of maqet_snapshot_info (never changes anything)."""
    require_engine(module)
    from maqet_engine import engine

    params = module.params
    ctx = context(module, check_mode=True)
    snapshots = run(module, lambda: engine.list_snapshots(ctx, params["vm"],
                                                          drive=params["drive"]).data,
                    vm=params["vm"])
    if params["name"]:
        snapshots = [s for s in snapshots if s.get("name") == params["name"]]
    exit_task(module, changed=False, vm=params["vm"], snapshots=snapshots)
