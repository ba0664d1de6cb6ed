"""The desired-state snapshot API shared by ``maqet snapshot`` and ``maqet_snapshot``.

:func:`ensure_snapshot` converges one snapshot to ``present`` (create if missing),
``absent`` (delete if present) or ``reverted`` (load it: always a change), then prunes
the oldest snapshots of the same scope beyond ``retention``. Check mode walks the same
path, recording the same actions, and touches nothing.

Scope: ``drive=None`` is VM-wide: every writable qcow2 disk, and on a running VM also
RAM and device state (QMP ``snapshot-save``/``-load``/``-delete`` jobs); on a stopped
VM the disks only (qemu-img). ``drive=NAME`` is that one disk (disk only, also live).
Which path is taken depends on whether the VM runs now.

Each operation done is recorded as an event of the VM (``snapshot_created``,
``snapshot_deleted``, ``snapshot_reverted``; ``snapshot_failed`` with the error), under
the caller's operation id, so ``maqet events`` shows snapshots beside everything else.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from maqet_engine import constants as C
from maqet_engine.engine.result import Result
from maqet_engine.errors import (
    MaqetError,
    SnapshotNotFound,
    StateConflict,
    StateStoreError,
    UsageError,
)
from maqet_engine.snapshots import targets
from maqet_engine.snapshots.backends import Live, Offline, SnapshotInfo
from maqet_engine.snapshots.targets import Disk
from maqet_engine.store import Store, VMRecord
from maqet_engine.store import storage_records as records

Progress = Callable[[str], None]


@runtime_checkable
class Tracker(Protocol):
    """A progress display that covers an operation from start to end (the CLI's TTY
    bar); ``track(message)`` is entered before the operation and left after it."""

    def track(self, message: str) -> contextlib.AbstractContextManager[object]: ...


Reporter = Progress | Tracker


# --- views ---------------------------------------------------------------------------------
def _created(info: SnapshotInfo) -> float:
    return int(info.get("date-sec", 0)) + int(info.get("date-nsec", 0)) / 1e9


def _view(per_disk: dict[str, list[SnapshotInfo]], disks: list[Disk], scope: str,
          meta: dict[str, records.SnapshotRecord]) -> list[dict[str, Any]]:
    """One entry per snapshot name in the scope, oldest first."""
    by_name: dict[str, dict[str, Any]] = {}
    for disk in disks:
        for info in per_disk.get(disk.name, []):
            name = str(info["name"])
            entry = by_name.setdefault(name, {
                "name": name, "drive": scope or None, "drives": [], "created": _created(info),
                "vm_state": False, "vm_state_size": 0, "vm_state_drive": None,
                "vm_clock": int(info.get("vm-clock-sec", 0))
                + int(info.get("vm-clock-nsec", 0)) / 1e9,
            })
            entry["drives"].append(disk.name)
            entry["created"] = min(entry["created"], _created(info))
            size = int(info.get("vm-state-size", 0))
            if size > 0:
                entry["vm_state"] = True
                entry["vm_state_size"] += size
                entry["vm_state_drive"] = entry["vm_state_drive"] or disk.name
    for entry in by_name.values():
        entry["complete"] = len(entry["drives"]) == len(disks)
        entry["created_at"] = entry["created"]
        entry["size"] = entry["vm_state_size"] or None
        row = meta.get(entry["name"])
        entry["managed"] = row is not None  # made through maqet
        entry["recorded_at"] = row.created_at if row else None
    return sorted(by_name.values(), key=lambda e: (e["created"], e["name"]))


class _Scope:
    """The VM, its disks in this scope, and the backend that reaches them now."""

    def __init__(self, paths: Any, store: Store, record: VMRecord, drive: str | None,
                 timeout: float, *, for_change: bool, live: bool | None = None) -> None:
        spec = record.spec_data
        self.vm = record.name
        self.store = store
        self.drive = drive
        self.key = drive or records.VM_WIDE
        if drive is not None:
            self.disks = [targets.one_drive(spec, record.name, drive)]
        elif for_change:
            self.disks = targets.vm_wide(spec, record.name)
        else:
            self.disks = targets.listable(spec)
        self._cache: list[dict[str, Any]] | None = None
        running = _is_live(paths, record)
        if live is not None and live != running:
            raise StateConflict(
                f"VM {record.name!r} is {'running' if running else 'not running'}, so a "
                f"{'live' if live else 'offline'} snapshot is not possible",
                hint="start it first" if live else "stop it first, or leave 'live' unset")
        self.backend: Live | Offline = (Live(paths, store, record.name, timeout) if running
                                        else Offline(record.name, timeout))

    @property
    def vm_wide(self) -> bool:
        return self.drive is None

    def list(self) -> list[dict[str, Any]]:
        """The scope's snapshots, read once and then kept up to date by the ``noted_*``
        calls: offline that spares a qemu-img run per change, live it re-reads (QMP
        is cheap and knows the RAM state size)."""
        if self._cache is None:
            meta = {r.name: r for r in records.snapshots_of(self.store, self.vm, self.key)}
            entries = _view(self.backend.snapshots(self.disks), self.disks, self.key, meta)
            for entry in entries:
                entry["vm"] = self.vm
            self._cache = entries
        return [dict(e) for e in self._cache]

    def noted_created(self, name: str) -> None:
        if self.backend.live or self._cache is None:
            self._cache = None
            return
        now = time.time()
        self._cache = [e for e in self._cache if e["name"] != name] + [{
            "name": name, "vm": self.vm, "drive": self.drive, "drives": [d.name for d in
                                                                         self.disks],
            "created": now, "created_at": now, "vm_state": False, "vm_state_size": 0,
            "size": None, "vm_state_drive": None, "vm_clock": 0.0, "complete": True,
            "managed": True, "recorded_at": now}]

    def noted_deleted(self, name: str) -> None:
        if self.backend.live or self._cache is None:
            self._cache = None
            return
        self._cache = [e for e in self._cache if e["name"] != name]

    def describe(self, name: str, entry: dict[str, Any] | None = None) -> str:
        if not self.vm_wide:
            return f"snapshot {name} of disk {self.drive}"
        disks = ", ".join(d.name for d in self.disks)
        ram = (entry["vm_state"] if entry else self.backend.live)
        return f"snapshot {name} ({'RAM and ' if ram else ''}disks {disks})"

    def action(self, verb: str, name: str, entry: dict[str, Any] | None = None,
               **details: Any) -> dict[str, Any]:
        """A snapshot action: ``create_snapshot``, ``delete_snapshot``,
        ``revert_snapshot`` with the snapshot, its scope and whether RAM is involved."""
        ram = bool(entry["vm_state"] if entry else self.backend.live) and self.vm_wide
        return {"action": verb, "snapshot": name, "drive": self.drive,
                "disks": [d.name for d in self.disks], "ram": ram, **details}


@contextlib.contextmanager
def _recorded(scope: _Scope, done: str, name: str, **details: Any) -> Iterator[None]:
    """Record the operation in the block as event ``snapshot_<done>`` of the VM, or
    ``snapshot_failed`` (with the error) when it raises. A store that cannot take the
    event does not turn a done operation into a failure."""
    data = {"snapshot": name, "drive": scope.drive, "live": scope.backend.live, **details}
    started = time.monotonic()
    try:
        yield
    except MaqetError as err:
        with contextlib.suppress(StateStoreError):
            scope.store.add_event(scope.vm, "snapshot_failed",
                                  {**data, "operation": done, "error": str(err)})
        raise
    with contextlib.suppress(StateStoreError):
        scope.store.add_event(scope.vm, f"snapshot_{done}",
                              {**data, "seconds": round(time.monotonic() - started, 3)})


def _is_live(paths: Any, record: VMRecord) -> bool:
    from maqet_engine.engine import runstate

    return runstate.probe(paths, record).active


@contextlib.contextmanager
def _progress_after(progress: Reporter | None, message: str) -> Iterator[None]:
    """Report a block that runs longer than a second: a :class:`Tracker` covers the
    whole block (``track(message)``, e.g. the CLI's TTY bar, which waits the second
    itself); a plain callable is called once with ``message`` after a second."""
    if progress is None:
        yield
        return
    if isinstance(progress, Tracker):
        with progress.track(message):
            yield
        return
    timer = threading.Timer(C.SNAPSHOT_PROGRESS_AFTER_S, progress, (message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# --- public API ----------------------------------------------------------------------------
def list_snapshots(ctx: Any, vm: str, drive: str | None = None) -> Result:
    """The VM's snapshots (VM-wide view, or one drive's), oldest first, read from the
    images themselves (qemu-img JSON offline, QMP live) plus maqet's metadata.

    Each entry: ``name``, ``drive`` (None = VM-wide), ``drives`` (disks holding it),
    ``complete`` (on every disk of the scope), ``created`` (epoch s), ``vm_state``
    (includes RAM and device state), ``vm_state_size``, ``vm_clock`` (guest seconds
    run), ``managed`` (made through maqet), ``recorded_at``.
    """
    with ctx.open_store(create=False) as store:
        record = store.require_vm(vm)
        found = _Scope(ctx.paths, store, record, drive, C.SNAPSHOT_JOB_TIMEOUT_S,
                       for_change=False).list()
    return Result(name=vm, state="list", data=found)


def ensure_snapshot(ctx: Any, vm: str, name: str, *, state: str = "present",
                    drive: str | None = None, retention: int | None = None,
                    check_mode: bool | None = None, timeout: float = C.SNAPSHOT_JOB_TIMEOUT_S,
                    progress: Reporter | None = None, live: bool | None = None,
                    ) -> Result:
    """Converge snapshot ``name`` of VM ``vm`` to ``state``.

    :param ctx: an ``EngineContext`` (``paths``, ``check_mode``, ``open_store``).
    :param state: ``present``, ``absent`` or ``reverted``.
    :param drive: one disk's snapshot; None = VM-wide (see the module docstring).
    :param retention: keep at most this many (complete) snapshots in the scope, deleting
        the oldest; None = no pruning.
    :param check_mode: default ``ctx.check_mode``.
    :param timeout: seconds one snapshot operation may take.
    :param progress: a callable called with one line when an operation runs longer than
        a second, or a :class:`Tracker` whose ``track(message)`` covers each operation.
    :param live: None = live exactly when the VM runs; True/False insist on it (a
        :class:`StateConflict` when the VM's run state disagrees).
    :return: a Result whose ``data`` is ``{"snapshots", "snapshot", "pruned", "name",
        "drive", "live"}``; ``snapshots`` is the scope's list after the change (before it
        in check mode), ``snapshot`` this one's entry in it (None if absent), ``pruned``
        the names deleted by ``retention``.
    :raise SnapshotNotFound: ``reverted`` to a snapshot that does not exist.
    :raise UsageError: bad name/state/retention, raw disks, no qcow2 disk.
    :raise QMPCommandError: QEMU refused (its message; job failures ``JobFailed``).
    :raise OperationTimeout: the operation was still running after ``timeout``.
    """
    if state not in C.SNAPSHOT_STATES:
        raise UsageError(f"unknown snapshot state {state!r}",
                         hint=f"use one of: {', '.join(C.SNAPSHOT_STATES)}")
    targets.validate_name(name)
    if retention is not None and (isinstance(retention, bool) or not isinstance(retention, int)
                                  or retention < 1):
        raise UsageError(f"retention {retention!r} must be a whole number >= 1",
                         hint="omit it to keep every snapshot")
    check = ctx.check_mode if check_mode is None else check_mode
    actions: list[dict[str, Any]] = []
    with ctx.open_store(create=False) as store:
        record = store.require_vm(vm)
        scope = _Scope(ctx.paths, store, record, drive, timeout, for_change=True, live=live)
        current = {e["name"]: e for e in scope.list()}
        entry = current.get(name)
        if state == "present" and not (entry and entry["complete"]):
            if entry is not None:  # on some disks only: make it whole again
                holders = [d for d in scope.disks if d.name in entry["drives"]]
                actions.append(scope.action("delete_snapshot", name, entry,
                                            reason="incomplete"))
                if not check:
                    with _recorded(scope, "deleted", name, reason="incomplete"):
                        scope.backend.delete(holders, name, vm_wide=scope.vm_wide)
            actions.append(scope.action("create_snapshot", name))
            if not check:
                _create(scope, name, progress)
        elif state == "absent" and entry is not None:
            actions.append(scope.action("delete_snapshot", name, entry))
            if not check:
                _delete(scope, name, entry, progress)
        elif state == "reverted":
            if entry is None or not entry["complete"]:
                missing = "does not exist" if entry is None else \
                    f"exists only on {', '.join(entry['drives'])}"
                raise SnapshotNotFound(
                    f"{scope.describe(name)} of VM {vm!r} {missing}",
                    hint="list the VM's snapshots to see which exist")
            skipped = bool(entry["vm_state"] and not scope.backend.live)
            actions.append(scope.action("revert_snapshot", name, entry, ram_skipped=skipped))
            if not check:
                with _progress_after(progress, f"loading {scope.describe(name, entry)}"), \
                        _recorded(scope, "reverted", name, ram=bool(entry["vm_state"])
                                  and scope.backend.live):
                    scope.backend.load(scope.disks, name, vm_wide=scope.vm_wide,
                                       vmstate=entry["vm_state_drive"])
        pruned: list[str] = []
        if retention is not None and state != "absent":
            pruned = _prune(scope, name, retention, current, check=check, progress=progress)
            actions += [scope.action("delete_snapshot", p, current.get(p), reason="retention",
                                     retention=retention) for p in pruned]
        after = list(current.values()) if check else scope.list()
    this = next((e for e in after if e["name"] == name), None)
    result = Result(name=vm, state=state)
    result.extend(actions)
    result.data = {"snapshots": after, "snapshot": this, "pruned": pruned, "name": name,
                   "drive": drive, "live": scope.backend.live}
    return result


def _create(scope: _Scope, name: str, progress: Reporter | None) -> None:
    with _progress_after(progress, f"saving {scope.describe(name)}"), \
            _recorded(scope, "created", name, ram=scope.backend.live and scope.vm_wide):
        scope.backend.create(scope.disks, name, vm_wide=scope.vm_wide)
    scope.noted_created(name)
    made = next((e for e in scope.list() if e["name"] == name), None)
    records.record_snapshot(scope.store, scope.vm, name, scope.key,
                            vm_state=bool(made and made["vm_state"]),
                            size=(made["vm_state_size"] or None) if made else None)
    scope.noted_created(name)  # now with its metadata row


def _delete(scope: _Scope, name: str, entry: dict[str, Any], progress: Reporter | None, *,
            reason: str | None = None) -> None:
    holders = [d for d in scope.disks if d.name in entry["drives"]]
    with _progress_after(progress, f"deleting {scope.describe(name, entry)}"), \
            _recorded(scope, "deleted", name, **({"reason": reason} if reason else {})):
        scope.backend.delete(holders, name, vm_wide=scope.vm_wide)
    records.forget_snapshot(scope.store, scope.vm, name, scope.key)
    scope.noted_deleted(name)


def _prune(scope: _Scope, keep_name: str, retention: int, before: dict[str, dict[str, Any]],
           *, check: bool, progress: Reporter | None) -> list[str]:
    """Delete the oldest complete snapshots of the scope beyond ``retention``; returns
    their names."""
    entries = list(before.values()) if check else scope.list()
    complete = [e for e in entries if e["complete"]]
    if check and not before.get(keep_name, {}).get("complete"):  # it counts, as the newest
        complete.append({"name": keep_name})
    excess = len(complete) - retention
    pruned: list[str] = []
    for entry in complete:
        if excess <= 0:
            break
        if entry["name"] == keep_name:
            continue
        pruned.append(entry["name"])
        excess -= 1
        if not check:
            _delete(scope, entry["name"], entry, progress, reason="retention")
    return pruned
