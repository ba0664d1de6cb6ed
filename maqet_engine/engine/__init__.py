"""The engine's facade: the one way in for every front end (the ``maqet`` CLI, the
``maqet.vm`` Ansible collection, Python users). Front ends import this package and
:mod:`maqet_engine.errors`, nothing else (an architecture test enforces it).

Every call takes an :class:`EngineContext` (where the installation lives, check mode)
and returns a :class:`Result`: ``changed``, ``actions``, ``before``/``after``, the VM's
view and ``data``. See docs/api.md::

    from maqet_engine import engine

    ctx = engine.EngineContext.for_home("/tmp/maqet-demo")
    spec = engine.load_definition(ctx, definition={"name": "vm1", "memory": "256M"})
    result = engine.apply(ctx, spec=spec, state="present")

Names are resolved lazily (PEP 562), so importing the facade stays cheap: ``maqet ls``
pays only for what it calls.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_API = "maqet_engine.engine.api"
_OPS = "maqet_engine.engine.operations"
_READ = "maqet_engine.engine.reading"
_IMAGES = "maqet_engine.engine.image_ops"
_NET = "maqet_engine.engine.networks"
_EVENTS = "maqet_engine.engine.event_stream"  # (not "events": the function's name)
_METRICS = "maqet_engine.engine.metrics"
_WAITS = "maqet_engine.engine.waits"
_GUEST = "maqet_engine.engine.guest"
_EXPORTS = {
    # definitions and desired state
    "STATES": _API, "load_definition": _API, "define": _API, "apply": _API, "remove": _API,
    # run state
    "start": _OPS, "stop": _OPS, "restart": _OPS, "pause": _OPS, "resume": _OPS,
    # reading
    "list_vms": _READ, "show": _READ, "status": _READ, "read_log": _READ, "log_path": _READ,
    "LOGS": _READ, "storage_files": _READ, "list_snapshots": _READ,
    # requests to a running VM
    "qmp": _OPS, "is_read_only": _OPS, "send_keys": _OPS, "type_text": _OPS,
    "screendump": _OPS, "SCREENDUMP_FORMATS": _OPS, "write_console": _OPS,
    # waiting for the guest, and what its console printed
    "wait_console": _WAITS, "wait_ssh": _WAITS, "wait_agent": _WAITS, "wait_ready": _WAITS,
    "read_console": _WAITS,
    # into the guest through its agent, and the serial console
    "guest_exec": _GUEST, "exec_argv": _GUEST, "put_file": _GUEST, "fetch_file": _GUEST,
    "guest_info": _GUEST, "guest_interfaces": _GUEST, "agent_command": _GUEST, "console": _GUEST,
    "ConsoleSession": _GUEST,
    # the event stream and metrics (docs/observability.md)
    "events": _EVENTS, "follow_events": _EVENTS, "parse_since": _EVENTS,
    "metrics_text": _METRICS, "serve_metrics": _METRICS, "write_metrics_textfile": _METRICS,
    # snapshots and storage
    "snapshot": _OPS, "purge_orphaned_storage": _OPS,
    # the image cache
    "images": _IMAGES, "pull_image": _IMAGES, "remove_image": _IMAGES,
    "prune_images": _IMAGES, "TTYBar": "maqet_engine.images.progress",
    # named networks
    "NETWORK_STATES": _NET, "load_network": _NET, "define_network": _NET,
    "apply_network": _NET,
    "remove_network": _NET, "list_networks": _NET, "show_network": _NET,
    # the contract
    "EngineContext": "maqet_engine.engine.context",
    "Result": "maqet_engine.engine.result",
    "describe_action": "maqet_engine.engine.result",
    # logging (a library logs nothing unless a front end asks)
    "enable_verbose": "maqet_engine.log",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
