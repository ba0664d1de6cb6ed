"""The outcome of one desired-state call, shared by the CLI and the modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    name: str
    state: str
    changed: bool = False
    actions: list[str] = field(default_factory=list)
    before: dict[str, Any] | None = None  # normalized spec before (diff mode)
    after: dict[str, Any] | None = None  # normalized spec after
    restart_required: bool = False
    vm: dict[str, Any] | None = None

    def record(self, action: str) -> None:
        """Note an action taken (or, in check mode, that would be taken)."""
        self.actions.append(action)
        self.changed = True

    def extend(self, actions: list[str]) -> None:
        for action in actions:
            self.record(action)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "changed": self.changed,
            "actions": list(self.actions),
            "diff": {"before": self.before, "after": self.after},
            "restart_required": self.restart_required,
            "vm": self.vm,
        }
