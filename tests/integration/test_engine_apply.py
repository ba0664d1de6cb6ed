"""The desired-state API end to end on real QEMU: every state four ways (check, apply,
apply again, check again), definition drift and --recreate, absent of a running VM."""

from __future__ import annotations

from typing import Any

import guest
import pytest
from guest import wait_marker

from maqet_engine.engine import EngineContext, apply, load_spec, remove
from maqet_engine.errors import StateConflict
from maqet_engine.store import VMStatus

pytestmark = pytest.mark.qemu


def guest_config(vms: Any, **overrides: Any) -> dict[str, Any]:
    config = {"name": "app", "accel": guest.test_accel(), "memory": "256M", "machine": "q35",
              "kernel": str(vms.guest.kernel), "initrd": str(vms.guest.initrd),
              "append": guest.GUEST_APPEND, "arguments": ["-no-reboot"]}
    config.update(overrides)
    return config


def four_ways(vms: Any, state: str, config: dict[str, Any], **kwargs: Any) -> list[Any]:
    """check, apply, apply again, check again -> the four results. Asserts that the
    check runs started no process and wrote nothing."""
    results = []
    for check in (True, False, False, True):
        ctx = EngineContext(paths=vms.paths, check_mode=check)
        pids, rows = set(vms.our_pids()), _rows(vms)
        results.append(apply(ctx, spec=load_spec(ctx, config=config), state=state, **kwargs))
        if check:  # nothing started (a runner of an earlier stop may still be exiting)
            assert set(vms.our_pids()) <= pids and _rows(vms) == rows
    return results


def _rows(vms: Any) -> list[Any]:
    with vms.store() as store:
        return [(r.name, r.status, r.spec_hash, r.qemu_pid) for r in store.list_vms()]


def test_running_stopped_absent_four_ways(vms):
    vms.names.append("app")
    config = guest_config(vms)
    check, first, again, check_again = four_ways(vms, "running", config)
    assert (check.changed, check.actions) == (True, ["defined", "started"])
    assert (first.changed, first.actions) == (True, ["defined", "started"])
    assert first.vm["status"] == "running" and first.before is None
    assert first.after == load_spec(EngineContext(paths=vms.paths), config=config).data
    assert (again.changed, again.actions, check_again.changed) == (False, [], False)
    wait_marker(vms.paths, "app")

    check, first, again, check_again = four_ways(vms, "stopped", config, timeout=30)
    assert check.changed and check.actions == ["stopped"]
    assert first.changed and first.actions[0].startswith("stopped (ACPI powerdown")
    assert first.vm["status"] == "stopped" and first.vm["qemu_pid"] is None
    assert (again.changed, check_again.changed) == (False, False)

    check, first, again, check_again = four_ways(vms, "absent", config)
    assert (check.actions, first.actions, again.actions, check_again.actions) == (
        ["removed"], ["removed"], [], [])
    assert first.before is not None and first.after is None


def test_drift_on_a_running_vm_needs_recreate(vms):
    vms.names.append("app")
    ctx = EngineContext(paths=vms.paths)
    apply(ctx, spec=load_spec(ctx, config=guest_config(vms)), state="running")
    wait_marker(vms.paths, "app")
    first_pid = vms.record("app").qemu_pid

    bigger = guest_config(vms, memory="320M")
    result = apply(ctx, spec=load_spec(ctx, config=bigger), state="running")
    assert (result.changed, result.actions, result.restart_required) == (
        True, ["redefined"], True)
    assert result.before["memory"] == 256 << 20 and result.after["memory"] == 320 << 20
    again = apply(ctx, spec=load_spec(ctx, config=bigger), state="running")
    assert (again.changed, again.restart_required) == (False, True)  # still drifting
    assert vms.record("app").qemu_pid == first_pid

    check = apply(EngineContext(paths=vms.paths, check_mode=True),
                  spec=load_spec(ctx, config=bigger), state="running", recreate=True)
    assert check.actions == ["stopped", "started"] and not check.restart_required
    assert vms.record("app").qemu_pid == first_pid

    done = apply(ctx, spec=load_spec(ctx, config=bigger), state="running", recreate=True,
                 timeout=30)
    assert done.actions[0].startswith("stopped (ACPI powerdown") and not done.restart_required
    assert done.actions[1:] == ["started"]
    record = vms.record("app")
    assert record.qemu_pid != first_pid and record.started_hash == record.spec_hash
    assert apply(ctx, spec=load_spec(ctx, config=bigger), state="running").changed is False


def test_rm_of_a_running_vm_needs_force(vms):
    vms.names.append("app")
    ctx = EngineContext(paths=vms.paths)
    apply(ctx, spec=load_spec(ctx, config=guest_config(vms)), state="running")
    wait_marker(vms.paths, "app")
    with pytest.raises(StateConflict, match="is running; stop it first or remove it with"):
        remove(ctx, "app")
    assert vms.record("app").status is VMStatus.RUNNING
    result = remove(ctx, "app", force=True, timeout=30)
    assert result.changed and result.actions[-1] == "removed"
    assert result.actions[0].startswith("stopped (ACPI powerdown")
    assert not vms.our_pids()


def test_rm_of_a_vm_that_died_unrecorded_is_not_refused(vms):
    vms.names.append("app")
    ctx = EngineContext(paths=vms.paths)
    apply(ctx, spec=load_spec(ctx, config=guest_config(vms)), state="running")
    assert vms.kill_all()  # runner and QEMU SIGKILLed: the store still says running
    assert vms.record("app").status is VMStatus.RUNNING
    result = remove(ctx, "app")
    assert result.actions == ["removed"]
    with vms.store() as store:
        assert store.get_vm("app") is None
        assert [e.kind for e in store.events("app")][-2:] == ["crashed", "removed"]
