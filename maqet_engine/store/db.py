"""SQLite access: one short transaction per write, WAL, busy timeout, migrations.

Reads never create anything: opening a store whose file does not exist in
read-only mode yields an empty store. Every sqlite3 error is turned into a
:class:`~maqet_engine.errors.StateStoreError` that says what to do.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine import ops
from maqet_engine.errors import (
    AlreadyExists,
    StateStoreError,
    UsageError,
    VMNotFound,
    host_error,
)
from maqet_engine.store.migrations import MIGRATIONS, SCHEMA_VERSION
from maqet_engine.store.records import EventRecord, VMRecord, VMStatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_RUNTIME_FIELDS = frozenset(
    {
        "status", "runner_pid", "qemu_pid", "accel", "started_at", "stopped_at", "last_exit",
        "started_hash", "qemu_start", "runner_start", "started_networks", "ports_json",
    }
)


# What SQLite says when it cannot set up a WAL database for reading: the WAL index
# (-shm, 32 KiB) cannot be created or sized (full disk, read-only filesystem).
_CANNOT_READ_WAL = ("SQLITE_CANTOPEN", "SQLITE_IOERR_SHMSIZE", "SQLITE_IOERR_SHMOPEN",
                    "SQLITE_IOERR_SHMMAP", "SQLITE_READONLY")


def filesystem_trouble(path: Path) -> str | None:
    """Why the filesystem holding ``path`` (or its nearest existing parent) cannot be
    written: ``"read-only"``, ``"full"`` (less than ``DISK_LOW_BYTES`` free), or None."""
    import os

    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        if st.f_flag & os.ST_RDONLY:
            return "read-only"
        if st.f_bavail * st.f_frsize < C.DISK_LOW_BYTES:
            return "full"
        return None
    return None


def _store_error(path: Path, err: sqlite3.Error) -> StateStoreError:
    text = str(err)
    code = getattr(err, "sqlite_errorname", "") or ""
    trouble = filesystem_trouble(path)
    if code.startswith("SQLITE_FULL") or "disk is full" in text or (
            trouble == "full" and code.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN"))):
        text = "database or disk is full"
        hint = "free space on that filesystem and retry; nothing was changed"
    elif trouble == "read-only":
        text = f"{text} (the filesystem is read-only)"
        hint = ("remount it read-write, or set MAQET_HOME to a writable directory; nothing "
                "was changed")
    elif "not a database" in text or "malformed" in text:
        hint = "the file is damaged: move it away (maqet will start a new, empty store)"
    elif "readonly" in text or "unable to open" in text:
        hint = "check the permissions of that directory or set MAQET_HOME"
    elif "locked" in text:
        hint = "another maqet process held the store too long; retry"
    elif code.startswith("SQLITE_IOERR"):
        hint = "check that filesystem (free space, dmesg) and retry"
    else:
        hint = "retry with --debug and report it if it persists"
    return StateStoreError(f"state store {path}: {text}", hint=hint)


def _wal_is_empty(path: Path) -> bool:
    """No committed change waits in the WAL (so the database file alone is current)."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _rollback(db: sqlite3.Connection) -> None:
    """End the open transaction, if any. SQLite itself rolls back on some errors (a full
    disk, an I/O error), and a ROLLBACK then fails with "no transaction is active": that
    must never replace the error that caused it."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


class Store:
    """The state store of one maqet installation (one SQLite file)."""

    def __init__(self, db: sqlite3.Connection | None, path: Path) -> None:
        self._db = db
        self.path = path
        self._frozen: str | None = None  # why this store can only be read (see open)
        self._announce = False  # the open transaction recorded events (see write)

    # --- opening ------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Store:
        """Open (and with ``create``, make and migrate) the store at ``path``.

        Without ``create`` a missing file gives an empty, read-only store and no
        file or directory is made.
        """
        if not create and not path.exists():
            return cls(None, path)
        db: sqlite3.Connection | None = None
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            db = cls._connect(str(path), uri=False)
            store = cls(db, path)
            store._migrate()
            return store
        except sqlite3.Error as err:
            if db is not None:
                db.close()
            trouble = filesystem_trouble(path)
            code = getattr(err, "sqlite_errorname", "") or ""
            if (not create and trouble is not None and code.startswith(_CANNOT_READ_WAL)
                    and _wal_is_empty(path)):
                return cls._open_frozen(path, trouble)
            raise _store_error(path, err) from err
        except OSError as err:
            if db is not None:
                db.close()
            raise host_error(err, "create the state store", path, cls=StateStoreError) \
                from err
        except BaseException:
            if db is not None:
                db.close()
            raise

    @classmethod
    def _open_frozen(cls, path: Path, trouble: str) -> Store:
        """Read a store that SQLite cannot open the usual way because its filesystem is
        read-only or full (no room for the WAL index). The WAL is empty, and no writer
        can exist while nobody can size that index, so the file alone is the truth:
        SQLite reads it as immutable. Writes are refused with ``trouble`` as the reason."""
        db = None
        try:
            db = cls._connect(path.absolute().as_uri() + "?immutable=1", uri=True)
            store = cls(db, path)
            store._frozen = trouble
            store._migrate()
            return store
        except sqlite3.Error as err:
            if db is not None:
                db.close()
            raise _store_error(path, err) from err

    @staticmethod
    def _connect(target: str, *, uri: bool) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=C.DB_BUSY_TIMEOUT_MS / 1000,
                             isolation_level=None, check_same_thread=False, uri=uri)
        try:
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {C.DB_BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self) -> None:
        db = self._require_db()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateStoreError(
                f"state store {self.path} has schema version {version}, newer than this "
                f"maqet understands ({SCHEMA_VERSION})",
                hint="upgrade maqet",
            )
        if version == SCHEMA_VERSION:
            return
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        with self.write():
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                step(db)
                db.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error):  # its last checkpoint may not fit
                db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def exists(self) -> bool:
        return self._db is not None

    @property
    def schema_version(self) -> int:
        rows = self._read("PRAGMA user_version")
        return int(rows[0][0]) if rows else 0

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateStoreError(f"state store {self.path} was opened read-only and is missing")
        return self._db

    # --- transactions ---------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): all or nothing. One that recorded
        events touches :attr:`events_stamp` once committed (see there)."""
        db = self._require_db()
        if self._frozen is not None:
            full = self._frozen == "full"
            raise StateStoreError(
                f"state store {self.path}: cannot write: "
                + ("the disk is full" if full else "the filesystem is read-only"),
                hint="free space on that filesystem and retry; nothing was changed" if full
                else "remount it read-write, or set MAQET_HOME to a writable directory")
        try:
            _rollback(db)  # a transaction a failed ROLLBACK left open
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise _store_error(self.path, err) from err
        self._announce = False
        try:
            yield db
        except BaseException as err:
            _rollback(db)
            if isinstance(err, sqlite3.Error):
                raise _store_error(self.path, err) from err
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as err:
            _rollback(db)
            raise _store_error(self.path, err) from err
        if self._announce:
            self._announce = False
            _touch(self.events_stamp)

    @property
    def events_stamp(self) -> Path:
        """``maqet.events`` beside the store: touched after each commit that recorded
        events, so a follower (``maqet events --follow``) sleeps on inotify and wakes
        when new events are visible. (The WAL's own writes are no such signal: its last
        write precedes the commit's fsync and its wal-index update in shared memory,
        which inotify does not see, so a reader woken by it can find nothing yet.)"""
        return self.path.with_name(C.EVENTS_STAMP_FILE)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        if self._db is None:
            return []
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise _store_error(self.path, err) from err

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of one read-only statement (none from a store that does not exist).
        For modules that keep their own tables (``state.storage_records``)."""
        return self._read(sql, params)

    # --- VMs ------------------------------------------------------------------
    def get_vm(self, name: str) -> VMRecord | None:
        rows = self._read("SELECT * FROM vms WHERE name = ?", (name,))
        return VMRecord.from_row(rows[0]) if rows else None

    def require_vm(self, name: str) -> VMRecord:
        record = self.get_vm(name)
        if record is None:
            raise VMNotFound(name, home=str(self.path.parent))
        return record

    def list_vms(self) -> list[VMRecord]:
        return [VMRecord.from_row(r) for r in self._read("SELECT * FROM vms ORDER BY name")]

    def insert_vm(self, name: str, spec_json: str, spec_hash: str) -> VMRecord:
        now = time.time()
        with self.write() as db:
            try:
                db.execute(
                    "INSERT INTO vms (name, spec_json, spec_hash, status, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, spec_json, spec_hash, VMStatus.DEFINED.value, now, now),
                )
            except sqlite3.IntegrityError as err:
                raise AlreadyExists(f"a VM named {name!r} already exists") from err
            self._event(db, name, "defined", {"spec_hash": spec_hash})
        return self.require_vm(name)

    def update_spec(self, name: str, spec_json: str, spec_hash: str) -> VMRecord:
        with self.write() as db:
            cur = db.execute(
                "UPDATE vms SET spec_json = ?, spec_hash = ?, updated_at = ? WHERE name = ?",
                (spec_json, spec_hash, time.time(), name),
            )
            if cur.rowcount == 0:
                raise VMNotFound(name)
            self._event(db, name, "redefined", {"spec_hash": spec_hash})
        return self.require_vm(name)

    def delete_vm(self, name: str) -> bool:
        with self.write() as db:
            cur = db.execute("DELETE FROM vms WHERE name = ?", (name,))
            if cur.rowcount:
                self._event(db, name, "removed", {})
            return cur.rowcount > 0

    def update_runtime(self, name: str, *, event: str | None = None,
                       event_data: dict[str, Any] | None = None, op_id: str | None = None,
                       **fields: Any) -> None:
        """Set run-state columns (status, pids, ...) and optionally record an event
        (``op_id``: the operation that caused it; None: the current one, if any)."""
        unknown = set(fields) - _RUNTIME_FIELDS
        if unknown:
            raise ValueError(f"not runtime fields: {sorted(unknown)}")
        values = {k: (v.value if isinstance(v, VMStatus) else v) for k, v in fields.items()}
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self.write() as db:
            db.execute(f"UPDATE vms SET {assignments} WHERE name = ?", (*values.values(), name))
            if event:
                self._event(db, name, event, event_data or {}, op_id)

    # --- events ---------------------------------------------------------------
    def _event(self, db: sqlite3.Connection, name: str, kind: str, data: dict[str, Any],
               op_id: str | None = None) -> None:
        """Insert one event (``op_id`` None: the operation this process serves now, see
        :mod:`maqet_engine.ops`); every ``EVENTS_PRUNE_EVERY``-th one also applies the
        retention policy, in the same transaction."""
        keep, max_age_days = retention()  # a bad setting fails every write, not 1 in 100
        self._announce = True
        now = time.time()
        cur = db.execute(
            "INSERT INTO events (vm_name, at, kind, data, op_id) VALUES (?, ?, ?, ?, ?)",
            (name, now, kind, json.dumps(data, sort_keys=True),
             op_id if op_id is not None else ops.current_op()),
        )
        if cur.lastrowid is not None and cur.lastrowid % C.EVENTS_PRUNE_EVERY == 0:
            self._prune(db, now, keep, max_age_days)

    def add_event(self, name: str, kind: str, data: dict[str, Any] | None = None, *,
                  op_id: str | None = None) -> None:
        with self.write() as db:
            self._event(db, name, kind, data or {}, op_id)

    def events(self, name: str, limit: int = C.EVENTS_SHOWN_DEFAULT) -> list[EventRecord]:
        """The last ``limit`` events of VM ``name``, oldest first."""
        return self.find_events(vm=name, limit=limit)

    def find_events(self, *, vm: str | None = None, since: float | None = None,
                    op_id: str | None = None, after_id: int | None = None,
                    limit: int | None = None) -> list[EventRecord]:
        """Events oldest first: of one VM (None: all), at or after ``since`` (epoch
        seconds), of one operation, with an id above ``after_id``; with ``limit`` only
        the last that many of those."""
        where, params = [], []
        for clause, value in (("vm_name = ?", vm), ("at >= ?", since), ("op_id = ?", op_id),
                              ("id > ?", after_id)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT * FROM events" + (f" WHERE {' AND '.join(where)}" if where else "")
        if limit is None:
            rows = self._read(sql + " ORDER BY id", tuple(params))
        else:
            rows = self._read(f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id",
                              (*params, max(limit, 0)))
        return [EventRecord.from_row(r) for r in rows]

    def last_event_id(self) -> int:
        """The id of the newest event (0 when there is none)."""
        rows = self._read("SELECT max(id) FROM events")
        return int(rows[0][0] or 0) if rows else 0

    def event_counts(self, kinds: tuple[str, ...]) -> dict[tuple[str, str, str], int]:
        """How many events of ``kinds`` each VM ever had, pruned ones included:
        ``{(vm, kind, detail): count}``, where detail is the rung of a ``stop_rung``
        event and '' otherwise. One pass over the events table."""
        if not kinds or self._db is None:
            return {}
        marks = ", ".join("?" * len(kinds))
        rows = self._read(
            "SELECT vm_name, kind, detail, sum(n) FROM ("
            f" SELECT vm_name, kind, {_DETAIL} AS detail, count(*) AS n FROM events"
            f"  WHERE kind IN ({marks}) GROUP BY 1, 2, 3"
            " UNION ALL SELECT vm_name, kind, detail, count FROM event_totals"
            f"  WHERE kind IN ({marks})"
            ") GROUP BY 1, 2, 3", (*kinds, *kinds))
        return {(r[0], r[1], r[2]): int(r[3]) for r in rows}

    def prune_events(self, *, keep: int | None = None, max_age_days: float | None = None,
                     now: float | None = None) -> int:
        """Apply the retention policy now (defaults: :func:`retention`); returns how many
        events were deleted. The write path does this by itself every
        ``EVENTS_PRUNE_EVERY`` events."""
        default_keep, default_days = retention()
        with self.write() as db:
            return self._prune(db, time.time() if now is None else now,
                               default_keep if keep is None else keep,
                               default_days if max_age_days is None else max_age_days)

    def _prune(self, db: sqlite3.Connection, now: float, keep: int, max_age_days: float,
               ) -> int:
        """Delete each defined VM's events beyond the newest ``keep``, and (at most
        ``EVENTS_PRUNE_AGE_BATCH`` of the oldest) events older than ``max_age_days``;
        0 turns a limit off. What is deleted is first added to ``event_totals``.
        Events of removed VMs go by age only."""
        deleted = 0
        if keep > 0:
            cuts = db.execute(
                "SELECT name, (SELECT id FROM events WHERE vm_name = vms.name"
                " ORDER BY id DESC LIMIT 1 OFFSET ?) FROM vms", (keep,)).fetchall()
            for vm, cut in cuts:
                if cut is not None:
                    deleted += _fold_and_delete(db, "vm_name = ? AND id <= ?", (vm, cut))
        if max_age_days > 0:
            deleted += _fold_and_delete(
                db, "id IN (SELECT id FROM events ORDER BY id LIMIT ?) AND at < ?",
                (C.EVENTS_PRUNE_AGE_BATCH, now - max_age_days * 86400))
        return deleted


# The detail kept in event_totals: the rung of a stop_rung event.
_DETAIL = "CASE kind WHEN 'stop_rung' THEN coalesce(json_extract(data, '$.rung'), '') ELSE '' END"


def _fold_and_delete(db: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> int:
    db.execute(
        "INSERT INTO event_totals (vm_name, kind, detail, count)"
        f" SELECT vm_name, kind, {_DETAIL}, count(*) FROM events WHERE {where} GROUP BY 1, 2, 3"
        " ON CONFLICT (vm_name, kind, detail) DO UPDATE SET count = count + excluded.count",
        params)
    return db.execute(f"DELETE FROM events WHERE {where}", params).rowcount


def _touch(path: Path) -> None:
    """Change ``path``'s times (IN_ATTRIB), creating it (0600) the first time. Best
    effort: followers re-read every ``EVENTS_FOLLOW_RECHECK_S`` anyway."""
    import os

    try:
        os.utime(path)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                             0o600))
    except OSError:
        pass


def retention() -> tuple[int, float]:
    """(events kept per VM, maximum age in days) from ``MAQET_EVENTS_KEEP`` and
    ``MAQET_EVENTS_MAX_AGE_DAYS`` (defaults ``EVENTS_KEEP``, ``EVENTS_MAX_AGE_DAYS``;
    0 turns a limit off).

    :raise UsageError: a value that is not a number >= 0 (whole, for the count).
    """
    import math
    import os

    keep_text = os.environ.get(C.ENV_EVENTS_KEEP, "").strip()
    days_text = os.environ.get(C.ENV_EVENTS_MAX_AGE_DAYS, "").strip()
    try:
        keep = int(keep_text) if keep_text else C.EVENTS_KEEP
        days = float(days_text) if days_text else float(C.EVENTS_MAX_AGE_DAYS)
        if keep < 0 or days < 0 or not math.isfinite(days):
            raise ValueError
    except ValueError:
        raise UsageError(
            f"event retention {C.ENV_EVENTS_KEEP}={keep_text!r} "
            f"{C.ENV_EVENTS_MAX_AGE_DAYS}={days_text!r} is not valid",
            hint=f"{C.ENV_EVENTS_KEEP} is a whole number of events per VM, "
            f"{C.ENV_EVENTS_MAX_AGE_DAYS} a number of days (0 turns a limit off); fix or "
            "unset them") from None
    return keep, days
