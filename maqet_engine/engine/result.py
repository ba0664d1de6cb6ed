"""The outcome of one engine call, shared by the CLI, the modules and Python users.

Every facade function returns a :class:`Result`: ``changed``, the ``actions`` taken
(or, in check mode, that would be taken), ``before``/``after`` for diff mode, the VM's
view, and ``data`` for what a call reads (a QMP reply, a console match, a list).

An action is a stable verb with details, the same in check mode and in a real run
except for what only a real run can measure (``rung``, ``seconds``)::

    {"action": "stop", "rung": "powerdown", "seconds": 0.04}
    {"action": "create_disk", "storage": "hdd", "path": "/.../hdd.qcow2", "size": 2147483648}
    {"action": "fetch_image", "location": "https://...", "digest": "sha256:...", "size": 123}

:func:`describe_action` spells one for people (``stopped (ACPI powerdown, 0.04 s)``).
"""

from __future__ import annotations

from typing import Any

from maqet_engine import constants as C

Action = dict[str, Any]

# Verbs and how people read them. Snapshot verbs: see docs/glossary.md.
_PAST = {
    "define": "defined", "redefine": "redefined", "start": "started", "adopt": "adopted",
    "stop": "stopped", "pause": "paused", "resume": "resumed", "remove": "removed",
    "create_disk": "created disk", "delete_file": "deleted", "send_keys": "sent keys",
    "type_text": "typed text", "write_console": "wrote to the console", "qmp": "ran QMP",
    "screendump": "saved the screen to",
    "create_snapshot": "created snapshot", "delete_snapshot": "deleted snapshot",
    "revert_snapshot": "reverted to snapshot",
    "fetch_image": "fetched image", "remove_image": "removed image",
    "write_seed": "wrote the cloud-init seed",
    "define_network": "defined network", "redefine_network": "redefined network",
    "remove_network": "removed network",
}
_RUNG_TEXT = {"powerdown": "ACPI powerdown", "quit": "QMP quit", "kill": "SIGKILL"}


def describe_action(action: Action) -> str:
    """One action for people: ``started``, ``stopped (QMP quit, 0.31 s)``, ..."""
    verb = str(action.get("action"))
    text = _PAST.get(verb, verb)
    if verb == "create_disk":
        from maqet_engine.definition.units import format_size

        details = [format_size(action["size"])] if action.get("size") is not None else []
        if action.get("image"):
            details.append(f"overlay on image {_digest(action.get('backing'))}")
        elif action.get("backing"):
            details.append(f"overlay on {action['backing']}")
        return f"{text} {action.get('storage')}" + (f" ({', '.join(details)})" if details else "")
    if verb in ("fetch_image", "remove_image"):
        details = [_digest(action["digest"])] if action.get("digest") else []
        if action.get("size") is not None:
            from maqet_engine.images.progress import human_size

            details.append(human_size(action["size"]))
        where = action.get("location") or ""
        return " ".join(p for p in (text, where) if p) + (
            f" ({', '.join(details)})" if details else "")
    if verb == "write_seed":
        return f"{text} ({action.get('instance_id')})"
    if verb in ("delete_file", "screendump"):
        return f"{text} {action.get('path')}"
    if verb in ("send_keys", "type_text", "write_console"):
        return f"{text} ({action.get('count')})"
    if verb == "qmp":
        return f"{text} {action.get('command')}"
    if verb.endswith("_snapshot"):
        if action.get("reason") == "incomplete":
            text = "deleted incomplete snapshot"
        return f"{text} {_snapshot_text(action)}"
    if verb == "stop" and "rung" in action:
        rung = action["rung"]
        if rung is None:
            return f"{action.get('status', 'stopped')} ({action.get('reason') or 'QEMU exited'})"
        detail = f"{_RUNG_TEXT.get(rung, rung)}, {float(action.get('seconds') or 0):.2f} s"
        if rung != "powerdown" and not action.get("force"):
            detail += f"; the guest did not power off within {action.get('timeout', 0):g} s"
        return f"{action.get('status', 'stopped')} ({detail})"
    return text


def _digest(text: object) -> str:
    """``sha256:<12 hex digits>`` for a digest (as ``images.cache.short`` shows one);
    anything else (a location) as it is."""
    value = str(text)
    prefix = f"{C.IMAGE_DIGEST_ALGORITHM}:"
    if value.startswith(prefix):
        return value[:len(prefix) + C.IMAGE_DIGEST_SHOWN]
    return value


def _snapshot_text(action: Action) -> str:
    name = action.get("snapshot")
    disks = ", ".join(action.get("disks") or [])
    if action.get("reason") == "retention":
        return f"{name} (retention {action.get('retention')})"
    if action.get("drive"):
        text = f"{name} of disk {action['drive']}"
    else:
        text = f"{name} ({'RAM and ' if action.get('ram') else ''}disks {disks})"
    if action.get("ram_skipped"):
        text += "; disks only: the VM is stopped"
    return text


class Result:
    """The outcome of one call (mutable while the engine builds it)."""

    __slots__ = ("name", "state", "changed", "actions", "before", "after",
                 "restart_required", "vm", "data", "op_id")

    def __init__(self, name: str | None, state: str | None = None, *,
                 before: dict[str, Any] | None = None, data: Any = None,
                 vm: dict[str, Any] | None = None) -> None:
        self.name = name  # the VM (None for calls about the whole installation)
        self.state = state  # the desired state asked for, or the operation
        self.changed = False
        self.actions: list[Action] = []
        self.before = before  # {"status": ..., "spec": {...}} (diff mode)
        self.after: dict[str, Any] | None = None
        self.restart_required = False
        self.vm = vm
        self.data = data  # what the call read (a QMP reply, a list, ...)
        self.op_id: str | None = None  # the operation id of the call (set by the facade)

    def __repr__(self) -> str:
        return (f"Result(name={self.name!r}, state={self.state!r}, changed={self.changed}, "
                f"actions={self.actions!r})")

    def record(self, verb: str, **details: Any) -> Action:
        """Note an action taken (or, in check mode, that would be taken)."""
        action: Action = {"action": verb, **details}
        self.actions.append(action)
        self.changed = True
        return action

    def extend(self, actions: list[Action]) -> None:
        for action in actions:
            self.actions.append(action)
            self.changed = True

    def describe(self) -> list[str]:
        """The actions for people, in order."""
        return [describe_action(a) for a in self.actions]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "changed": self.changed,
            "actions": [dict(a) for a in self.actions],
            "diff": {"before": self.before, "after": self.after},
            "restart_required": self.restart_required,
            "vm": self.vm,
            "data": self.data,
            "op_id": self.op_id,
        }
