"""Facade calls for the event stream: what happened to VMs, oldest first, and what
happens next.

Events are what the store records: every status change (``starting``, ``started``,
``stopped``, ``crashed``...), QEMU's QMP events (``SHUTDOWN``, ``STOP``...), the stop
ladder's rungs (``stop_rung``), re-adoptions (``adopted``), snapshot operations, and
requests that failed (``request_failed``). Each carries the operation id of what caused
it (``op_id``; None for the guest's own doings).

Following does not poll the store: it sleeps on inotify until a commit that recorded
events touches ``maqet.events`` beside the store (:attr:`Store.events_stamp`; the WAL's
own writes come before the commit is visible, see there), then reads the rows after the
last id it saw. A re-read every ``EVENTS_FOLLOW_RECHECK_S`` without a change is the
safety net, not the mechanism.
"""

from __future__ import annotations

import re
import time
from typing import Any

from maqet_engine import constants as C
from maqet_engine.engine.context import EngineContext, operation
from maqet_engine.engine.result import Result
from maqet_engine.errors import UsageError, VMNotFound
from maqet_engine.store import EventRecord, Store

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE_HINT = ("give an ISO time (2024-05-01T12:00, local unless it has an offset), epoch "
               "seconds (1714560000), or a time ago: 30s, 10m, 2h, 3d, 1w")


def parse_since(value: str | float | None, *, now: float | None = None) -> float | None:
    """``since`` as epoch seconds: a number (epoch seconds), or text that is an ISO 8601
    time (local time unless it has an offset), epoch seconds, or a time ago (``10m``,
    ``2h``, ``30s``, ``3d``, ``1w``).

    :raise UsageError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"since {value!r} is not a time", hint=_SINCE_HINT)
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    now = time.time() if now is None else now
    match = _RELATIVE.fullmatch(text)
    if match:
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(f"since {value!r} is not a time", hint=_SINCE_HINT) from None


def event_view(event: EventRecord) -> dict[str, Any]:
    """An event as front ends show it: the record plus ``time`` (ISO 8601, local)."""
    from datetime import datetime

    view = event.to_dict()
    view["time"] = datetime.fromtimestamp(event.at).astimezone().isoformat(
        timespec="milliseconds")
    return view


def _check_vm(store: Store, name: str | None, found: bool) -> None:
    """A VM name that is neither defined nor in any event is a typo: say so. ``found``:
    the query already returned events of it (nothing more to ask)."""
    if name is None or found:
        return
    if not store.find_events(vm=name, limit=1) and store.get_vm(name) is None:
        raise VMNotFound(name, home=str(store.path.parent))


@operation
def events(ctx: EngineContext, name: str | None = None, *, since: str | float | None = None,
           op_id: str | None = None, limit: int | None = None) -> Result:
    """Recorded events, oldest first (``data``: a list of :func:`event_view` dicts): of
    VM ``name`` (None: all; a removed VM's are kept until retention prunes them), at or
    after ``since`` (:func:`parse_since`), of operation ``op_id``, only the last
    ``limit``."""
    start = parse_since(since)
    if limit is not None and limit < 0:
        raise UsageError(f"limit {limit} must not be negative")
    with ctx.open_store(create=False, verify=False) as store:
        found = store.find_events(vm=name, since=start, op_id=op_id, limit=limit)
        _check_vm(store, name, bool(found))
    return Result(name=name, state="events", data=[event_view(e) for e in found])


def follow_events(ctx: EngineContext, name: str | None = None, *, op_id: str | None = None,
                  since: str | float | None = None, limit: int | None = 0,
                  timeout: float | None = None) -> EventFollower:
    """The events :func:`events` would return (``limit`` 0, the default: none), then
    each one committed from this call on, by any process, as :func:`event_view` dicts.
    Blocks on inotify between commits; ends after ``timeout`` seconds (None: when the
    caller stops iterating or closes it, or on Ctrl-C). The watch starts here, not at
    the first ``next()``: nothing committed after this call is missed."""
    return EventFollower(ctx, name, op_id=op_id, since=parse_since(since), limit=limit,
                         timeout=timeout)


class EventFollower:
    """The iterator :func:`follow_events` returns; a context manager that closes the
    watch and the store (so does exhausting it)."""

    def __init__(self, ctx: EngineContext, name: str | None, *, op_id: str | None,
                 since: float | None, limit: int | None, timeout: float | None) -> None:
        from maqet_engine.ipc.watch import IN_ATTRIB, IN_CREATE, DirectoryWatch

        db = ctx.paths.db
        if not db.exists():
            if name is not None:
                raise VMNotFound(name, home=str(ctx.paths.data))
            raise UsageError(f"no state store at {db} yet: there is nothing to follow",
                             hint="define a VM first (maqet add / maqet apply)")
        if limit is not None and limit < 0:
            raise UsageError(f"limit {limit} must not be negative")
        self._store: Store | None = None
        self._name, self._op_id = name, op_id
        self._deadline = None if timeout is None else time.monotonic() + timeout
        # The watch exists before the first read: a commit between a read and the wait
        # is still seen.
        self._watch = DirectoryWatch(db.parent, IN_ATTRIB | IN_CREATE).__enter__()
        try:
            self._store = ctx.open_store(create=False, verify=False)
            self._stamp = self._store.events_stamp.name
            self._last = self._store.last_event_id()
            backlog = [] if limit == 0 else self._store.find_events(
                vm=name, since=since, op_id=op_id, limit=limit)
            _check_vm(self._store, name, bool(backlog))
        except BaseException:
            self.close()
            raise
        self._ready = [event_view(e) for e in backlog]
        self._last = max([self._last, *(e.id for e in backlog)])

    def __iter__(self) -> EventFollower:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self._ready:
            if self._watch is None:
                raise StopIteration
            assert self._store is not None
            for event in self._store.find_events(after_id=self._last):  # each row once
                self._last = event.id
                if (self._name is None or event.vm_name == self._name) and (
                        self._op_id is None or event.op_id == self._op_id):
                    self._ready.append(event_view(event))
            if self._ready:
                break
            wait = C.EVENTS_FOLLOW_RECHECK_S
            if self._deadline is not None:
                wait = min(wait, self._deadline - time.monotonic())
                if wait <= 0:
                    self.close()
                    raise StopIteration
            self._watch.wait_for(self._stamp, timeout=wait)
        return self._ready.pop(0)

    def close(self) -> None:
        watch, self._watch = getattr(self, "_watch", None), None  # (half-built: no watch)
        if watch is not None:
            watch.__exit__(None, None, None)
        store, self._store = getattr(self, "_store", None), None
        if store is not None:
            store.close()

    def __enter__(self) -> EventFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
