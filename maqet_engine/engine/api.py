"""The desired-state entry points: apply, define, remove."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.definition import Spec
from maqet_engine.engine import definitions
from maqet_engine.engine.context import EngineContext
from maqet_engine.engine.result import Result
from maqet_engine.errors import AlreadyExists, UsageError, VMNotFound
from maqet_engine.store import Store

STATES = ("present", "running", "stopped", "restarted", "absent")


def load_spec(
    ctx: EngineContext,
    *,
    config: Mapping[str, Any] | None = None,
    files: Sequence[Path] = (),
    name: str | None = None,
    sets: Sequence[str] = (),
) -> Spec:
    """Build a validated spec from files and/or an inline mapping (merged last).

    Relative paths in an inline mapping resolve against the current directory,
    those from files against the last file's directory.
    """
    from maqet_engine.definition import load_definition, parse_spec
    from maqet_engine.definition.merge import deep_merge

    raw, base_dir = load_definition(files, sets, name) if files else ({}, Path.cwd())
    if config is not None:
        raw = deep_merge(raw, dict(config))
        if name:
            raw["name"] = name
    elif not files:
        raw = {"name": name} if name else {}
    return parse_spec(raw, base_dir=base_dir, paths=ctx.paths)


def define(ctx: EngineContext, spec: Spec) -> Result:
    """``maqet add``: create a VM; an identical existing definition is a no-op."""
    with ctx.open_store(create=not ctx.check_mode) as store:
        existing = store.get_vm(spec.name)
        if existing is not None and existing.spec_hash != spec.hash:
            raise AlreadyExists(
                f"a VM named {spec.name!r} already exists with another definition",
                hint="use 'maqet apply' to change it, or pick another --name",
            )
        result = Result(name=spec.name, state="present")
        definitions.ensure_present(ctx, store, spec, result)
        return definitions.finish(ctx, store, spec.name, result)


def remove(
    ctx: EngineContext,
    name: str,
    *,
    force: bool = False,
    purge: bool = False,
    missing_ok: bool = False,
    timeout: float = C.STOP_TIMEOUT_S,
) -> Result:
    """``maqet rm``: delete a VM; ``force`` stops it first."""
    with ctx.open_store(create=False) as store:
        record = store.get_vm(name)
        if record is None:
            if missing_ok:
                return Result(name=name, state="absent")
            raise VMNotFound(name)
    if force:
        return apply(ctx, name=name, state="absent", purge=purge, timeout=timeout)
    result = Result(name=name, state="absent")
    with ctx.open_store(create=True) as store:
        if record.status.is_active and not ctx.check_mode:
            # A VM recorded as running whose runner and QEMU are gone is recorded as
            # crashed first, so it is not refused as "running".
            _lifecycle().cleanup_stale(ctx.paths, store, name)
        definitions.ensure_absent(ctx, store, name, result, purge=purge)
    return result


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
) -> Result:
    """Converge one VM to ``state``. Give ``spec`` (any state) or ``name`` (all but
    a first ``present``/``running``)."""
    if state not in STATES:
        raise UsageError(f"unknown state {state!r}", hint=f"use one of: {', '.join(STATES)}")
    vm_name = spec.name if spec is not None else name
    if not vm_name:
        raise UsageError("apply needs a definition or a VM name")
    result = Result(name=vm_name, state=state)
    if state == "absent":
        return _apply_absent(ctx, vm_name, result, timeout=timeout, force=force, purge=purge)

    with ctx.open_store(create=not ctx.check_mode) as store:
        if spec is not None:
            record = definitions.ensure_present(ctx, store, spec, result)
        else:
            record = store.require_vm(vm_name)
            result.before = result.after = record.spec_data
        if record is None:  # check mode, VM not created yet
            if state in ("running", "restarted"):
                result.record("started")
            return result
        wanted = spec.data if spec is not None else record.spec_data
        wanted_hash = spec.hash if spec is not None else record.spec_hash
        running_hash = record.started_hash or record.spec_hash
        drift = record.status.is_active and running_hash != wanted_hash
        common = {"check_mode": ctx.check_mode}
        ladder = {"timeout": timeout, "force": force, **common}
        if state == "restarted" or (drift and recreate and state in ("present", "running")):
            result.extend(_prepare_storage(ctx, store, wanted))
            result.extend(_lifecycle().restart(ctx.paths, store, vm_name, **ladder))
            drift = False
        elif state == "running":
            # Idempotent (creates only missing files), so no guess from a status that
            # may be stale (a crashed VM still recorded as running).
            result.extend(_prepare_storage(ctx, store, wanted))
            result.extend(_lifecycle().ensure_running(ctx.paths, store, vm_name, **common))
        elif state == "stopped":
            result.extend(_lifecycle().ensure_stopped(ctx.paths, store, vm_name, **ladder))
            drift = False
        definitions.finish(ctx, store, vm_name, result)
        result.restart_required = drift
        return result


def _apply_absent(
    ctx: EngineContext, name: str, result: Result, *, timeout: float, force: bool, purge: bool
) -> Result:
    with ctx.open_store(create=False) as store:
        record = store.get_vm(name)
        if record is None:
            return result
        if record.status.is_active:
            result.extend(_lifecycle().ensure_stopped(
                ctx.paths, store, name, timeout=timeout, force=force, check_mode=ctx.check_mode))
        definitions.ensure_absent(ctx, store, name, result, purge=purge)
    return result


def _prepare_storage(ctx: EngineContext, store: Store, spec: dict[str, Any]) -> list[str]:
    """Create the disks a start needs (missing images, overlays) and register them."""
    from maqet_engine.storage import prepare_storage

    return prepare_storage(ctx.paths, store, spec, check_mode=ctx.check_mode)


def _lifecycle():  # noqa: ANN202 - module object
    """The runner-backed lifecycle, imported only when a run state is asked for."""
    from maqet_engine.engine import lifecycle

    return lifecycle
