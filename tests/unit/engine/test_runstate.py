"""One reading of "is it alive": the pure observation table."""

from __future__ import annotations

from typing import Any

import pytest

from maqet_engine.engine.runstate import observe
from maqet_engine.store import VMRecord, VMStatus

S = VMStatus


def record(status: VMStatus, **fields: Any) -> VMRecord:
    values: dict[str, Any] = {
        "id": 1, "name": "vm", "spec_json": "{}", "spec_hash": "h", "status": status,
        "runner_pid": 10, "qemu_pid": 11, "accel": "tcg", "created_at": 0.0,
        "updated_at": 0.0, "started_at": 0.0, "stopped_at": None, "last_exit": None,
        "started_hash": "h", "qemu_start": 100, "runner_start": 99, "started_networks": None,
        "ports_json": None}
    values.update(fields)
    return VMRecord(**values)


# (recorded, runner lock held, QEMU alive) -> observed status
TABLE = [
    (S.RUNNING, True, True, S.RUNNING),
    (S.PAUSED, True, True, S.PAUSED),
    (S.STOPPING, True, True, S.STOPPING),
    (S.RUNNING, False, True, S.RUNNING),  # runner died, QEMU lives: re-adoptable
    (S.PAUSED, False, True, S.PAUSED),
    (S.RUNNING, False, False, S.CRASHED),  # both gone without a recorded exit
    (S.STARTING, False, False, S.CRASHED),
    (S.STOPPING, False, False, S.CRASHED),
    (S.STOPPED, False, False, S.STOPPED),
    (S.CRASHED, False, False, S.CRASHED),
    (S.DEFINED, False, False, S.DEFINED),
    (S.STOPPED, True, False, S.STOPPED),  # a runner starting or exiting: trust the record
]


@pytest.mark.parametrize(("recorded", "locked", "alive", "observed"), TABLE)
def test_observation(recorded, locked, alive, observed):
    view = observe(record(recorded), runner_locked=locked, qemu_alive=alive)
    assert view.status == observed
    assert view.recorded == recorded
    assert view.stale == (recorded.is_active and not locked and not alive)
    assert (view.qemu_pid is not None) == alive
    assert (view.runner_pid is not None) == locked


def test_a_crash_says_why():
    view = observe(record(S.RUNNING), runner_locked=False, qemu_alive=False)
    assert view.reason == "runner and QEMU (pid 11) gone without recording an exit (was running)"
    stopped = observe(record(S.STOPPED, last_exit="exit code 0"), runner_locked=False,
                      qemu_alive=False)
    assert stopped.reason == "exit code 0" and not stopped.stale
