"""The run-state machine of one runner: which status may follow which.

A runner begins in the status the store recorded (a fresh start from ``defined``,
``stopped`` or ``crashed``; a re-adoption from an active status) and ends in
``stopped`` or ``crashed`` when QEMU exits::

    defined/stopped/crashed -> starting -> running <-> paused
    starting/running/paused -> stopping -> stopped | crashed
    starting/running/paused -> stopped | crashed           (QEMU exited on its own)
    starting -> defined | stopped | crashed                 (the start failed: back to
                                                             the status before it)

Staying in a status is always allowed (a re-adoption confirms ``running``; a QMP
``STOP`` event confirms the ``paused`` a pause already recorded). Anything else is a
bug in the runner and raises :class:`IllegalTransition` (answered and logged, never
written to the store).
"""

from __future__ import annotations

from maqet_engine.errors import MaqetError
from maqet_engine.store.records import VMStatus

S = VMStatus

ALLOWED: dict[VMStatus, frozenset[VMStatus]] = {
    S.DEFINED: frozenset({S.STARTING}),
    S.STOPPED: frozenset({S.STARTING}),
    S.CRASHED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.PAUSED, S.STOPPING, S.STOPPED, S.CRASHED,
                           S.DEFINED}),
    S.RUNNING: frozenset({S.PAUSED, S.STOPPING, S.STOPPED, S.CRASHED}),
    S.PAUSED: frozenset({S.RUNNING, S.STOPPING, S.STOPPED, S.CRASHED}),
    S.STOPPING: frozenset({S.STOPPED, S.CRASHED}),
}


class IllegalTransition(MaqetError):
    """A transition the table does not allow (a bug in the runner)."""

    def __init__(self, current: VMStatus, wanted: VMStatus) -> None:
        self.current = current
        self.wanted = wanted
        super().__init__(f"run status {current.value} cannot become {wanted.value}")


def check(current: VMStatus, wanted: VMStatus) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> wanted`` is allowed."""
    if wanted != current and wanted not in ALLOWED.get(current, frozenset()):
        raise IllegalTransition(current, wanted)
