# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of maqet_network and maqet_network_info (private to this collection).

One call of the engine's facade each: ``apply_network(ctx, spec, state=...)`` and
``list_networks(ctx)`` / ``show_network(ctx, name)``; ``changed``, ``actions`` and the
diff are exactly the engine's, in check mode too.
"""

from __future__ import annotations

from ansible_collections.maqet.vm.plugins.module_utils._engine import (
    argument_spec,
    context,
    exit_task,
    require_engine,
    run,
)

NETWORK_STATES = ("present", "absent")
NETWORK_TYPES = ("segment", "link", "bridged")

# Module option -> key of the network definition (None options are left out).
_DEFINITION_OPTIONS = (("type", "type"), ("interface", "interface"), ("group", "group"),
                       ("port", "port"), ("ttl", "ttl"), ("end_a", "a"), ("end_b", "b"),
                       ("bridge", "bridge"))

NETWORK_ARGUMENT_SPEC = argument_spec(
    name={"type": "str", "required": True},
    state={"type": "str", "default": "present", "choices": list(NETWORK_STATES)},
    type={"type": "str", "choices": list(NETWORK_TYPES)},
    interface={"type": "str"},
    group={"type": "str"},
    port={"type": "int"},
    ttl={"type": "int"},
    end_a={"type": "str"},
    end_b={"type": "str"},
    bridge={"type": "str"},
    definition={"type": "dict"},
)
NETWORK_REQUIRED_IF = [("state", "present", ("type", "definition"), True)]

NETWORK_INFO_ARGUMENT_SPEC = argument_spec(
    name={"type": "str"},
)


def _definition(params):
    """The network definition the options spell (``definition`` first, options over it)."""
    definition = dict(params.get("definition") or {})
    for option, key in _DEFINITION_OPTIONS:
        if params.get(option) is not None:
            definition[key] = params[option]
    return definition


def converge(ctx, params):
    """One engine ``apply_network()`` for the module's parameters."""
    from maqet_engine import engine

    if params["state"] == "absent":
        return engine.apply_network(ctx, name=params["name"], state="absent")
    spec = engine.load_network(ctx, definition=_definition(params), name=params["name"])
    return engine.apply_network(ctx, spec, state="present")


def run_network(module):
    """Body of maqet_network."""
    require_engine(module)
    ctx = context(module)
    params = module.params
    result = run(module, lambda: converge(ctx, params), name=params["name"])
    data = result.data or {}
    task = {
        "changed": result.changed,
        "name": params["name"],
        "state": params["state"],
        "actions": [dict(a) for a in result.actions],
        "restart_required": result.restart_required,
        "network": data if params["state"] == "present" else None,
    }
    if module._diff:
        task["diff"] = {"before": result.before or {}, "after": result.after or {}}
    exit_task(module, **task)


def describe_networks(ctx, name=None):
    """The views of one network (by name: the engine's show_network, which looks at that
    network only) or of all; a missing network gives an empty list."""
    from maqet_engine import engine

    if name:
        from maqet_engine.errors import NetworkNotFound

        try:
            return [engine.show_network(ctx, name).data]
        except NetworkNotFound:
            return []
    return engine.list_networks(ctx).data


def run_network_info(module):
    """Body of maqet_network_info (never changes anything)."""
    require_engine(module)
    ctx = context(module, check_mode=True)
    name = module.params["name"]
    networks = run(module, lambda: describe_networks(ctx, name))
    result = {"changed": False, "networks": networks}
    if name:
        result["exists"] = bool(networks)
    exit_task(module, **result)
