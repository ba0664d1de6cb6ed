"""One reading of "is it alive": a stored record plus two facts become the run view.

The facts are the runner's lock (held by a live runner for its whole life) and
QEMU's identity (its PID *and* start time still name a live process, see
:mod:`maqet_engine.ipc.procs`). :func:`observe` is pure; :func:`probe` gathers the
facts. Every reader (status, ls, ``maqet_vm_info``, the inventory, snapshots) uses
them, and reading never writes the store: a record that the facts contradict (a VM
recorded as running whose runner and QEMU are both gone) is *shown* as crashed and
is corrected by the next command that changes something (:func:`needs_record`).
"""

from __future__ import annotations

from maqet_engine.frozen import Frozen
from maqet_engine.ipc import locks, procs
from maqet_engine.paths import Paths
from maqet_engine.store import VMRecord, VMStatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class RunView(Frozen):
    """What is true now about one VM's processes."""

    __slots__ = ("status", "recorded", "runner_alive", "qemu_alive", "runner_pid", "qemu_pid",
                 "reason")
    status: VMStatus  # observed
    recorded: VMStatus  # what the store says
    runner_alive: bool
    qemu_alive: bool
    runner_pid: int | None  # only while alive
    qemu_pid: int | None
    reason: str | None  # why the observation differs from the record, or the last exit

    @property
    def active(self) -> bool:
        """A QEMU process exists (or is being started or stopped) for this VM."""
        return self.status.is_active

    @property
    def stale(self) -> bool:
        """The store says active, but runner and QEMU are gone (recorded crash due)."""
        return self.recorded.is_active and not (self.runner_alive or self.qemu_alive)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "recorded_status": self.recorded.value,
                "runner_alive": self.runner_alive, "qemu_alive": self.qemu_alive,
                "runner_pid": self.runner_pid, "qemu_pid": self.qemu_pid,
                "reason": self.reason}


def observe(record: VMRecord, *, runner_locked: bool, qemu_alive: bool) -> RunView:
    """The run view of ``record`` given whether its runner lock is held and whether
    the QEMU it names (PID + start time) is alive. Pure."""
    recorded = record.status
    if runner_locked:
        # A live runner keeps the record current. Holding the lock with an inactive
        # record, it is starting (nothing launched yet) or exiting (exit recorded).
        return RunView(status=recorded, recorded=recorded, runner_alive=True,
                       qemu_alive=qemu_alive, runner_pid=record.runner_pid,
                       qemu_pid=record.qemu_pid if qemu_alive else None,
                       reason=None if recorded.is_active else record.last_exit)
    if qemu_alive:
        status = recorded if recorded.is_active else VMStatus.RUNNING
        return RunView(status=status, recorded=recorded, runner_alive=False, qemu_alive=True,
                       runner_pid=None, qemu_pid=record.qemu_pid,
                       reason="its runner is gone; QEMU still runs (the next command "
                       "re-adopts it)")
    if recorded.is_active:
        return RunView(status=VMStatus.CRASHED, recorded=recorded, runner_alive=False,
                       qemu_alive=False, runner_pid=None, qemu_pid=None,
                       reason=f"runner and QEMU (pid {record.qemu_pid}) gone without "
                       f"recording an exit (was {recorded.value})")
    return RunView(status=recorded, recorded=recorded, runner_alive=False, qemu_alive=False,
                   runner_pid=None, qemu_pid=None, reason=record.last_exit)


def qemu_alive(record: VMRecord) -> bool:
    """The QEMU the record names is still that live process."""
    return procs.is_alive(record.qemu_pid, record.qemu_start)


def probe(paths: Paths, record: VMRecord) -> RunView:
    """:func:`observe` with the facts read now (a lock test and one /proc read)."""
    lock = paths.vm_runtime(record.id).lock_file
    return observe(record, runner_locked=locks.runner_alive(lock),
                   qemu_alive=qemu_alive(record))


def needs_record(view: RunView) -> bool:
    """A changing command must first record what the view found (a crash)."""
    return view.stale
