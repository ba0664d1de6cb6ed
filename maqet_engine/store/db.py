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
from maqet_engine.errors import AlreadyExists, StateStoreError, VMNotFound, host_error
from maqet_engine.store.migrations import MIGRATIONS, SCHEMA_VERSION
from maqet_engine.store.records import EventRecord, VMRecord, VMStatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_RUNTIME_FIELDS = frozenset(
    {
        "status", "runner_pid", "qemu_pid", "accel", "started_at", "stopped_at", "last_exit",
        "started_hash", "qemu_start", "runner_start", "ports_json",
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
        """One write transaction (``BEGIN IMMEDIATE``): all or nothing."""
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
                       event_data: dict[str, Any] | None = None, **fields: Any) -> None:
        """Set run-state columns (status, pids, ...) and optionally record an event."""
        unknown = set(fields) - _RUNTIME_FIELDS
        if unknown:
            raise ValueError(f"not runtime fields: {sorted(unknown)}")
        values = {k: (v.value if isinstance(v, VMStatus) else v) for k, v in fields.items()}
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self.write() as db:
            db.execute(f"UPDATE vms SET {assignments} WHERE name = ?", (*values.values(), name))
            if event:
                self._event(db, name, event, event_data or {})

    # --- events ---------------------------------------------------------------
    @staticmethod
    def _event(db: sqlite3.Connection, name: str, kind: str, data: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO events (vm_name, at, kind, data) VALUES (?, ?, ?, ?)",
            (name, time.time(), kind, json.dumps(data, sort_keys=True)),
        )

    def add_event(self, name: str, kind: str, data: dict[str, Any] | None = None) -> None:
        with self.write() as db:
            self._event(db, name, kind, data or {})

    def events(self, name: str, limit: int = C.EVENTS_SHOWN_DEFAULT) -> list[EventRecord]:
        rows = self._read(
            "SELECT * FROM (SELECT * FROM events WHERE vm_name = ? ORDER BY id DESC LIMIT ?)"
            " ORDER BY id",
            (name, limit),
        )
        return [EventRecord.from_row(r) for r in rows]
