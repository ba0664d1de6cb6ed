# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of maqet_vm and maqet_vm_info (private to this collection).

The modules only declare their options and call :func:`run_vm` / :func:`run_vm_info`.
Everything the VM converges to is decided by the engine's ``apply()``: this layer turns
module parameters into one engine call and the engine's Result into the task result,
so ``changed``, ``actions`` and the diff are exactly the engine's, in check mode too.
"""

from __future__ import annotations

from ansible_collections.maqet.vm.plugins.module_utils._engine import (
    argument_spec,
    context,
    exit_task,
    require_engine,
    run,
)

STATES = ("present", "running", "paused", "stopped", "restarted", "absent")
WAIT_STATES = ("running", "restarted")  # states after which the guest boots

# Engine default for stop/restart timeouts (maqet_engine.constants.STOP_TIMEOUT_S).
DEFAULT_TIMEOUT = 30.0
# Engine default of wait_ready (maqet_engine.constants.SSH_WAIT_TIMEOUT_S).
DEFAULT_WAIT_TIMEOUT = 300.0

VM_ARGUMENT_SPEC = argument_spec(
    name={"type": "str"},
    # "config"/"config_file" were the first names of these options: kept as aliases.
    definition={"type": "dict", "aliases": ["config"]},
    definition_file={"type": "path", "aliases": ["config_file"]},
    state={"type": "str", "default": "present", "choices": list(STATES)},
    recreate={"type": "bool", "default": False},
    timeout={"type": "float", "default": DEFAULT_TIMEOUT},
    force={"type": "bool", "default": False},
    purge={"type": "bool", "default": False},
    wait={"type": "dict", "options": {
        "ssh": {"type": "bool", "default": False},
        "agent": {"type": "bool", "default": False},
        "console": {"type": "str"},
        "timeout": {"type": "float", "default": DEFAULT_WAIT_TIMEOUT},
    }},
)
VM_REQUIRED_ONE_OF = [("name", "definition", "definition_file")]

VM_INFO_ARGUMENT_SPEC = argument_spec(
    name={"type": "str"},
    live={"type": "bool", "default": False},
    events={"type": "int", "default": 0},
    agent_timeout={"type": "int", "default": 5},
)


def _target_name(params):
    """The VM's name when no definition is parsed (absent, or name-only calls)."""
    if params.get("name"):
        return params["name"]
    definition = params.get("definition") or {}
    return definition.get("name")


def converge(ctx, params):
    """One engine ``apply()`` for the module's parameters; returns the engine Result."""
    from pathlib import Path

    from maqet_engine import engine

    state = params["state"]
    has_definition = params.get("definition") is not None or bool(params.get("definition_file"))
    spec = None
    name = _target_name(params)
    # `absent` needs only the name: a definition whose files are gone can still be removed.
    if has_definition and not (state == "absent" and name):
        files = [Path(params["definition_file"])] if params.get("definition_file") else []
        spec = engine.load_definition(ctx, definition=params.get("definition"), files=files,
                                      name=params.get("name"))
        name = spec.name
    return engine.apply(ctx, spec=spec, name=name, state=state, recreate=params["recreate"],
                        timeout=params["timeout"], force=params["force"],
                        purge=params["purge"])


def result_to_task(result, *, diff_mode):
    """The task result of an engine Result (diff only in diff mode)."""
    data = result.to_dict()
    diff = data.pop("diff")
    task = {
        "changed": data["changed"],
        "name": data["name"],
        "state": data["state"],
        "actions": data["actions"],
        "restart_required": data["restart_required"],
        "vm": data["vm"],
    }
    if diff_mode:
        task["diff"] = {"before": diff["before"] or {}, "after": diff["after"] or {}}
    return task


def wait_for_guest(ctx, name, wait):
    """The engine's ``wait_ready`` for the ``wait`` option: its data, and the VM's view
    afterwards (the known_hosts its runner wrote meanwhile)."""
    from maqet_engine import engine

    waited = engine.wait_ready(ctx, name, console=wait.get("console"),
                               ssh=wait.get("ssh"), agent=wait.get("agent"),
                               timeout=wait["timeout"])
    return waited.data, engine.show(ctx, name).data


def run_vm(module):
    """Body of maqet_vm."""
    require_engine(module)
    params = module.params
    if params["timeout"] < 0:
        module.fail_json(msg="timeout must not be negative")
    wait = params.get("wait") or {}
    waiting = bool(wait.get("ssh") or wait.get("agent") or wait.get("console") is not None)
    if waiting and params["state"] not in WAIT_STATES:
        module.fail_json(msg="wait applies to state running or restarted, not {0}".format(
            params["state"]))
    if waiting and wait["timeout"] < 0:
        module.fail_json(msg="wait.timeout must not be negative")
    ctx = context(module)
    result = run(module, lambda: converge(ctx, params), name=_target_name(params))
    task = result_to_task(result, diff_mode=module._diff)
    if waiting and not module.check_mode:
        # A wait that fails after a start says what the start did (changed, actions).
        task["wait"], task["vm"] = run(
            module, lambda: wait_for_guest(ctx, task["name"], wait), name=task["name"],
            changed=task["changed"], actions=task["actions"])
    exit_task(module, **task)


def describe_vms(ctx, name=None, *, live=False, events=0, agent_timeout=5):
    """The VM views of one VM (by name) or of all; a missing VM gives an empty list.
    ``live``: with the runner's report, and for a VM with a guest agent channel what its
    agent says (``guest``, or ``guest_error`` when it does not answer in time). With
    ``events``, each view also has its VM's last ``events`` events."""
    from maqet_engine import engine

    if name:
        from maqet_engine.errors import VMNotFound

        try:
            views = [engine.show(ctx, name, live=live).data]
        except VMNotFound:
            return []
    else:
        views = engine.list_vms(ctx, live=live, argv=True).data
    if live:
        for view in views:
            if view.get("agent"):
                _guest_facts(ctx, view, agent_timeout)
    if events:
        for view in views:
            view["events"] = engine.events(ctx, view["name"], limit=events).data
    return views


def _guest_facts(ctx, view, agent_timeout):
    from maqet_engine import engine
    from maqet_engine.errors import MaqetError

    try:
        view["guest"] = engine.guest_info(ctx, view["name"],
                                          agent_timeout=max(1, agent_timeout)).data
    except MaqetError as err:
        view["guest"] = None
        view["guest_error"] = str(err)


def run_vm_info(module):
    """Body of maqet_vm_info (never changes anything)."""
    require_engine(module)
    if module.params["events"] < 0:
        module.fail_json(msg="events must not be negative")
    ctx = context(module, check_mode=True)
    name = module.params["name"]
    vms = run(module, lambda: describe_vms(ctx, name, live=module.params["live"],
                                           events=module.params["events"],
                                           agent_timeout=module.params["agent_timeout"]))
    result = {"changed": False, "vms": vms}
    if name:
        result["exists"] = bool(vms)
    exit_task(module, **result)
