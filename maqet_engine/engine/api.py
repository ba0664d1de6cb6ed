"""The desired-state entry points: load a definition, define, apply, remove.

``apply()`` converges one VM to a desired *state* (``present``, ``running``,
``paused``, ``stopped``, ``restarted``, ``absent``) and returns a :class:`Result`
whose ``before``/``after`` hold the observed run *status* and the spec, so a diff
shows ``status: running -> stopped`` as well as definition changes. A call that fails
after it already changed something (a definition stored, then QEMU would not start)
raises with the partial result attached as ``err.result`` (``changed`` true).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.definition import Spec
from maqet_engine.engine import definitions, lifecycle, networks, runstate
from maqet_engine.engine.context import EngineContext, operation
from maqet_engine.engine.result import Action, Result
from maqet_engine.engine.view import vm_view
from maqet_engine.errors import AlreadyExists, MaqetError, UsageError, VMNotFound
from maqet_engine.store import Store, VMStatus

STATES = ("present", "running", "paused", "stopped", "restarted", "absent")
Progress = Callable[[int, int | None], None]  # a download's (done, total) bytes


def load_definition(
    ctx: EngineContext,
    *,
    definition: Mapping[str, Any] | None = None,
    files: Sequence[Path] = (),
    name: str | None = None,
    sets: Sequence[str] = (),
) -> Spec:
    """Build a validated spec from definition files and/or an inline mapping (merged
    last). Relative paths in an inline mapping resolve against the current directory,
    those from files against the last file's directory."""
    from maqet_engine.definition import load_definition as load_files
    from maqet_engine.definition import parse_spec
    from maqet_engine.definition.merge import deep_merge
    from maqet_engine.trust import check_definition_file

    raw, base_dir = load_files(files, sets, name) if files else ({}, Path.cwd())
    # Checked once read (a bad file is a usage error first): the owner and directory
    # checks make a swap between reading and checking impossible for another user.
    for file in files:  # another user's file, or one in their directory: not trusted
        check_definition_file(Path(file))
    if definition is not None:
        raw = deep_merge(raw, dict(definition))
        if name:
            raw["name"] = name
    elif not files:
        raw = {"name": name} if name else {}
    return parse_spec(raw, base_dir=base_dir, paths=ctx.paths)


@operation
def define(ctx: EngineContext, spec: Spec) -> Result:
    """Create a VM; an identical existing definition is a no-op, another one a conflict."""
    with ctx.open_store(create=not ctx.check_mode) as store:
        existing = store.get_vm(spec.name)
        if existing is not None and existing.spec_hash != spec.hash:
            raise AlreadyExists(
                f"a VM named {spec.name!r} already exists with another definition",
                hint="apply the definition to change it, or pick another name",
            )
        result = Result(name=spec.name, state="present")
        result.before = _snapshot(ctx, existing)
        definitions.ensure_present(ctx, store, spec, result)
        return _finish(ctx, store, spec.name, result, after_status=None, spec=spec)


@operation
def remove(
    ctx: EngineContext,
    name: str,
    *,
    force: bool = False,
    purge: bool = False,
    missing_ok: bool = False,
    timeout: float = C.STOP_TIMEOUT_S,
) -> Result:
    """Delete a VM's definition. A VM that runs is refused unless ``force``, which
    stops it the forced way (no ACPI powerdown: QMP quit, then SIGKILL)."""
    check_timeout(timeout)
    with ctx.open_store(create=False) as store:
        record = store.get_vm(name)
        if record is None:
            if missing_ok:
                return Result(name=name, state="absent")
            raise VMNotFound(name)
    if force:
        return apply(ctx, name=name, state="absent", purge=purge, timeout=timeout, force=True)
    result = Result(name=name, state="absent", before=_snapshot(ctx, record))
    with ctx.open_store(create=True) as store:
        if not ctx.check_mode:
            lifecycle.cleanup_stale(ctx.paths, store, name)  # a dead "running" VM is crashed
        definitions.ensure_absent(ctx, store, name, result, purge=purge)
    return result


@operation
def apply(
    ctx: EngineContext,
    *,
    spec: Spec | None = None,
    name: str | None = None,
    state: str = "present",
    recreate: bool = False,
    timeout: float = C.STOP_TIMEOUT_S,
    force: bool = False,
    purge: bool = False,
    progress: Progress | None = None,
) -> Result:
    """Converge one VM to ``state``. Give ``spec`` (any state) or ``name`` (all but a
    first ``present``/``running``).

    :param recreate: a running VM whose definition changed is restarted now (otherwise
        the result says ``restart_required``).
    :param timeout: seconds a graceful stop may take before QMP quit and SIGKILL.
    :param force: stops skip the ACPI powerdown (QMP quit, then SIGKILL).
    :param purge: with ``absent``: delete the files maqet created for the VM.
    :param progress: called as ``progress(done_bytes, total_bytes_or_None)`` while a
        start downloads (or copies) a disk's image into the image cache; the engine
        itself never prints.
    """
    if state not in STATES:
        raise UsageError(f"unknown state {state!r}", hint=f"use one of: {', '.join(STATES)}")
    check_timeout(timeout)
    vm_name = spec.name if spec is not None else name
    if not vm_name:
        raise UsageError("apply needs a definition or a VM name")
    result = Result(name=vm_name, state=state)
    try:
        if state == "absent":
            return _apply_absent(ctx, vm_name, result, timeout=timeout, force=force,
                                 purge=purge)
        return _apply_present(ctx, spec, vm_name, result, state=state, recreate=recreate,
                              timeout=timeout, force=force, progress=progress)
    except MaqetError as err:
        if result.changed and getattr(err, "result", None) is None:
            err.result = result
        raise


def check_timeout(timeout: float) -> None:
    """A stop timeout is a finite number of seconds >= 0."""
    import math

    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not math.isfinite(timeout) or timeout < 0:
        raise UsageError(f"timeout {timeout!r} must be a finite number of seconds >= 0")


def _apply_present(ctx: EngineContext, spec: Spec | None, name: str, result: Result, *,
                   state: str, recreate: bool, timeout: float, force: bool,
                   progress: Progress | None) -> Result:
    with ctx.open_store(create=not ctx.check_mode) as store:
        before = store.get_vm(name)
        result.before = _snapshot(ctx, before)
        if spec is not None:
            record = definitions.ensure_present(ctx, store, spec, result)
        else:
            record = store.require_vm(name)
        if record is None:  # check mode, VM not created yet
            if state in ("running", "paused", "restarted"):
                assert spec is not None  # a VM is only created from a definition
                result.extend(_prepare_storage(ctx, store, spec.data, progress))
                result.record("start")
            if state == "paused":
                result.record("pause")
            return _finish(ctx, store, name, result, spec=spec,
                           after_status=_predicted(state, VMStatus.DEFINED))
        view = runstate.probe(ctx.paths, record)
        wanted_hash = spec.hash if spec is not None else record.spec_hash
        running_hash = record.started_hash or record.spec_hash
        drift = view.active and (running_hash != wanted_hash or bool(
            networks.network_drift(record, networks.network_index(store))))
        ladder = {"timeout": timeout, "force": force, "check_mode": ctx.check_mode}
        wanted = spec.data if spec is not None else record.spec_data
        if state == "restarted" or (drift and recreate and state in ("present", "running",
                                                                     "paused")):
            result.extend(_prepare_storage(ctx, store, wanted, progress))
            result.extend(lifecycle.restart(ctx.paths, store, name, **ladder))
            drift = False
        elif state in ("running", "paused"):
            # Idempotent (creates only missing files), so no guess from a status that
            # may be stale (a crashed VM still recorded as running). The seed is what the
            # guest reads at its next boot: written when the VM starts now, not while it
            # runs on with a definition that changed (restart_required).
            result.extend(_prepare_storage(ctx, store, wanted, progress,
                                           seed=not view.active))
            result.extend(lifecycle.ensure_running(ctx.paths, store, name,
                                                   check_mode=ctx.check_mode))
        elif state == "stopped":
            result.extend(lifecycle.ensure_stopped(ctx.paths, store, name, **ladder))
            drift = False
        if state in ("running", "paused", "restarted"):
            started = any(a["action"] == "start" for a in result.actions)
            result.extend(_set_paused(ctx, store, name, paused=state == "paused",
                                      started=started))
        _finish(ctx, store, name, result, spec=spec,
                after_status=_predicted(state, view.status) if ctx.check_mode else None)
        result.restart_required = drift
        return result


def _set_paused(ctx: EngineContext, store: Store, name: str, *, paused: bool,
                started: bool) -> list[Action]:
    """``paused`` pauses; ``running`` resumes a paused VM. In check mode a VM that would
    only now start is predicted to start running."""
    if ctx.check_mode and started:
        return [{"action": "pause"}] if paused else []
    return lifecycle.set_paused(ctx.paths, store, name, paused=paused,
                                check_mode=ctx.check_mode)


def _apply_absent(ctx: EngineContext, name: str, result: Result, *, timeout: float,
                  force: bool, purge: bool) -> Result:
    with ctx.open_store(create=False) as store:
        record = store.get_vm(name)
        result.before = _snapshot(ctx, record)
        if record is None:
            return result
        if runstate.probe(ctx.paths, record).active:
            result.extend(lifecycle.ensure_stopped(ctx.paths, store, name, timeout=timeout,
                                                   force=force, check_mode=ctx.check_mode))
        elif not ctx.check_mode:
            lifecycle.cleanup_stale(ctx.paths, store, name)
        definitions.ensure_absent(ctx, store, name, result, purge=purge)
    return result


def _prepare_storage(ctx: EngineContext, store: Store, spec: dict[str, Any],
                     progress: Progress | None, *, seed: bool = True) -> list[Action]:
    """Create the disks a start needs (missing images, overlays on fetched images) and,
    with ``seed``, write the cloud-init seed; register them."""
    from maqet_engine.storage import prepare_storage

    return prepare_storage(ctx.paths, store, spec, check_mode=ctx.check_mode,
                           progress=progress, seed=seed)


_AFTER_STATE = {"running": VMStatus.RUNNING, "restarted": VMStatus.RUNNING,
                "paused": VMStatus.PAUSED}


def _predicted(state: str, status: VMStatus) -> VMStatus:
    """The status ``state`` leaves a VM in that is now ``status`` (check mode)."""
    if state in _AFTER_STATE:
        return _AFTER_STATE[state]
    if state == "stopped" and status.is_active:
        return VMStatus.STOPPED
    if status == VMStatus.STOPPING:
        return VMStatus.STOPPED
    return status


def _snapshot(ctx: EngineContext, record: Any) -> dict[str, Any] | None:
    """``{"status", "spec"}`` of a record now (None when the VM does not exist)."""
    if record is None:
        return None
    return {"status": runstate.probe(ctx.paths, record).status.value,
            "spec": record.spec_data}


def _finish(ctx: EngineContext, store: Store, name: str, result: Result, *,
            spec: Spec | None, after_status: VMStatus | None) -> Result:
    """Fill in ``after`` and the VM view. ``after_status`` is the prediction in check
    mode; real runs observe it."""
    record = store.get_vm(name)
    if record is None:  # check mode: the VM would be created
        result.after = {"status": (after_status or VMStatus.DEFINED).value,
                        "spec": spec.data if spec is not None else None}
        return result
    run = runstate.probe(ctx.paths, record)
    status = after_status if (ctx.check_mode and after_status is not None) else run.status
    result.after = {"status": status.value,
                    "spec": spec.data if spec is not None else record.spec_data}
    result.vm = vm_view(record, ctx.paths, run, with_argv=True,
                        networks=networks.network_index(store))
    result.restart_required = result.vm["restart_required"]
    return result
