"""Converging the stored definition: present and absent."""

from __future__ import annotations

from maqet_engine.definition import Spec
from maqet_engine.engine import networks
from maqet_engine.engine.context import EngineContext
from maqet_engine.engine.result import Result
from maqet_engine.errors import StateConflict
from maqet_engine.storage import check_claims, purge_files
from maqet_engine.store import Store, VMRecord


def ensure_present(ctx: EngineContext, store: Store, spec: Spec, result: Result) -> VMRecord | None:
    """Create or update the stored definition. Returns the record (None in check mode
    when the VM does not exist yet)."""
    record = store.get_vm(spec.name)
    if record is None or record.spec_hash != spec.hash:
        check_claims(store, spec)  # two VMs on one writable disk: refused before writing
        # NICs on named networks: the network exists, MACs and link ends are free
        networks.check_vm(store, spec.data, check_mode=ctx.check_mode)
    if record is None:
        result.record("define")
        if ctx.check_mode:
            return None
        return store.insert_vm(spec.name, spec.to_json(), spec.hash)
    if record.spec_hash == spec.hash:
        return record
    result.record("redefine")
    if ctx.check_mode:
        return record
    return store.update_spec(spec.name, spec.to_json(), spec.hash)


def ensure_absent(ctx: EngineContext, store: Store, name: str, result: Result, *,
                  purge: bool) -> None:
    """Delete the stored definition (the VM must not be running any more)."""
    record = store.get_vm(name)
    if record is None:
        return
    if record.status.is_active and not ctx.check_mode:
        raise StateConflict(f"VM {name!r} is {record.status.value}",
                            hint="stop it first, or remove it with force")
    if purge:
        from maqet_engine.trust import check_vm_dir

        check_vm_dir(ctx.paths, name)  # deleting in another user's directory: no
    result.record("remove")
    if not ctx.check_mode:
        store.delete_vm(name)
    if purge:  # only files maqet created (disks, logs); user-supplied disks are kept
        for path in purge_files(ctx.paths, store, name, check_mode=ctx.check_mode):
            result.record("delete_file", path=str(path))
