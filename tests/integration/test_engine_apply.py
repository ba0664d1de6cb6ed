"""The desired-state API end to end on real QEMU: every state four ways (check, apply,
apply again, check again), definition drift and --recreate, absent of a running VM."""

from __future__ import annotations

from typing import Any

import guest
import pytest
from guest import wait_marker

from maqet_engine.engine import EngineContext, apply, load_definition, remove
from maqet_engine.errors import QEMUNotFound, StateConflict
from maqet_engine.store import VMStatus

pytestmark = pytest.mark.qemu


def guest_config(vms: Any, **overrides: Any) -> dict[str, Any]:
    return guest.guest_definition("app", vms.guest, **overrides)


def verbs(result: Any) -> list[str]:
    return [a["action"] for a in result.actions]


def four_ways(vms: Any, state: str, config: dict[str, Any], **kwargs: Any) -> list[Any]:
    """check, apply, apply again, check again -> the four results. Asserts that the
    check runs started no process and wrote nothing."""
    results = []
    for check in (True, False, False, True):
        ctx = EngineContext(paths=vms.paths, check_mode=check)
        pids, rows = set(vms.our_pids()), _rows(vms)
        results.append(apply(ctx, spec=load_definition(ctx, definition=config), state=state,
                             **kwargs))
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
    assert (check.changed, verbs(check)) == (True, ["define", "start"])
    assert (first.changed, verbs(first)) == (True, ["define", "start"])
    assert check.actions == first.actions  # the same actions, check mode or not
    assert first.vm["status"] == "running" and first.before is None
    spec = load_definition(EngineContext(paths=vms.paths), definition=config).data
    assert first.after == check.after == {"status": "running", "spec": spec}
    assert (again.changed, again.actions, check_again.changed) == (False, [], False)
    assert again.before == again.after == {"status": "running", "spec": spec}
    wait_marker(vms.paths, "app")

    check, first, again, check_again = four_ways(vms, "stopped", config, timeout=30)
    assert check.changed and check.actions == [{"action": "stop", "force": False,
                                                "timeout": 30}]
    stop = first.actions[0]
    assert (stop["action"], stop["rung"], stop["status"]) == ("stop", "powerdown", "stopped")
    assert {k: stop[k] for k in check.actions[0]} == check.actions[0]  # + measured details
    assert first.before["status"] == "running" and first.after["status"] == "stopped"
    assert check.after == first.after
    assert first.vm["status"] == "stopped" and first.vm["qemu_pid"] is None
    assert (again.changed, check_again.changed) == (False, False)

    check, first, again, check_again = four_ways(vms, "absent", config)
    assert (verbs(check), verbs(first), again.actions, check_again.actions) == (
        ["remove"], ["remove"], [], [])
    assert first.before["status"] == "stopped" and first.after is None


def test_drift_on_a_running_vm_needs_recreate(vms):
    vms.names.append("app")
    ctx = EngineContext(paths=vms.paths)
    apply(ctx, spec=load_definition(ctx, definition=guest_config(vms)), state="running")
    wait_marker(vms.paths, "app")
    first_pid = vms.record("app").qemu_pid

    bigger = load_definition(ctx, definition=guest_config(vms, memory="320M"))
    result = apply(ctx, spec=bigger, state="running")
    assert (result.changed, verbs(result), result.restart_required) == (
        True, ["redefine"], True)
    assert result.before["spec"]["memory"] == 256 << 20
    assert result.after["spec"]["memory"] == 320 << 20
    again = apply(ctx, spec=bigger, state="running")
    assert (again.changed, again.restart_required) == (False, True)  # still drifting
    assert vms.record("app").qemu_pid == first_pid

    check = apply(EngineContext(paths=vms.paths, check_mode=True), spec=bigger,
                  state="running", recreate=True)
    assert verbs(check) == ["stop", "start"] and not check.restart_required
    assert vms.record("app").qemu_pid == first_pid

    done = apply(ctx, spec=bigger, state="running", recreate=True, timeout=30)
    assert verbs(done) == ["stop", "start"] and not done.restart_required
    assert done.actions[0]["rung"] == "powerdown"
    record = vms.record("app")
    assert record.qemu_pid != first_pid and record.started_hash == record.spec_hash
    assert apply(ctx, spec=bigger, state="running").changed is False


def test_rm_of_a_running_vm_needs_force(vms):
    vms.names.append("app")
    ctx = EngineContext(paths=vms.paths)
    apply(ctx, spec=load_definition(ctx, definition=guest_config(vms)), state="running")
    wait_marker(vms.paths, "app")
    with pytest.raises(StateConflict, match="is running; stop it first, or remove it with"):
        remove(ctx, "app")
    assert vms.record("app").status is VMStatus.RUNNING
    result = remove(ctx, "app", force=True, timeout=30)
    assert verbs(result) == ["stop", "remove"]
    # force means one thing everywhere: do not wait for the guest (no ACPI powerdown).
    assert result.actions[0]["rung"] == "quit" and result.actions[0]["seconds"] < 5
    assert not vms.our_pids()


def test_rm_of_a_vm_that_died_unrecorded_is_not_refused(vms):
    vms.names.append("app")
    ctx = EngineContext(paths=vms.paths)
    apply(ctx, spec=load_definition(ctx, definition=guest_config(vms)), state="running")
    assert vms.kill_all()  # runner and QEMU SIGKILLed: the store still says running
    assert vms.record("app").status is VMStatus.RUNNING
    result = remove(ctx, "app")
    assert verbs(result) == ["remove"]
    with vms.store() as store:
        assert store.get_vm("app") is None
        assert [e.kind for e in store.events("app")][-2:] == ["crashed", "removed"]


def test_a_start_that_fails_after_defining_reports_the_change(vms):
    """The definition was stored, then QEMU could not start: the error carries the
    partial result (changed, with what was done), and nothing is left running."""
    vms.names.append("app")
    ctx = EngineContext(paths=vms.paths)
    spec = load_definition(ctx, definition=guest_config(vms, binary="/nonexistent/qemu"))
    with pytest.raises(QEMUNotFound) as info:
        apply(ctx, spec=spec, state="running")
    assert info.value.exit_code == 6
    assert info.value.result.changed and verbs(info.value.result) == ["define"]
    assert vms.record("app").status is VMStatus.DEFINED
    assert not vms.our_pids()
