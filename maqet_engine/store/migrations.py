"""Schema versions of the state store, applied forward in order.

``PRAGMA user_version`` holds the version. Migration N takes a store at version
N-1 to N; a store newer than this code is refused rather than guessed at.
Never edit a released migration: add the next one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: ``executescript`` would COMMIT the caller's
    transaction first and break the all-or-nothing migration."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in migration: {statement!r}")


def _v1(db: sqlite3.Connection) -> None:
    _run_script(db,
        """
        CREATE TABLE vms (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: names runtime dirs
            name        TEXT NOT NULL UNIQUE,
            spec_json   TEXT NOT NULL,
            spec_hash   TEXT NOT NULL,
            status      TEXT NOT NULL DEFAULT 'defined',
            runner_pid  INTEGER,
            qemu_pid    INTEGER,
            accel       TEXT,
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL,
            started_at  REAL,
            stopped_at  REAL,
            last_exit   TEXT,
            started_hash TEXT  -- spec hash the running QEMU was started with (drift check)
        );
        CREATE TABLE events (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            vm_name  TEXT NOT NULL,
            at       REAL NOT NULL,
            kind     TEXT NOT NULL,
            data     TEXT
        );
        CREATE INDEX events_by_vm ON events (vm_name, id);
        """
    )


def _v2(db: sqlite3.Connection) -> None:
    """Files maqet created (so purge deletes only those) and snapshot metadata."""
    _run_script(db,
        """
        CREATE TABLE storage_files (
            path        TEXT PRIMARY KEY,
            vm_name     TEXT NOT NULL,
            storage     TEXT NOT NULL,
            created_at  REAL NOT NULL
        );
        CREATE INDEX storage_files_by_vm ON storage_files (vm_name);
        CREATE TABLE snapshots (
            vm_name     TEXT NOT NULL,
            name        TEXT NOT NULL,
            drive       TEXT NOT NULL DEFAULT '',  -- '' for VM-wide (live) snapshots
            created_at  REAL NOT NULL,
            vm_state    INTEGER NOT NULL DEFAULT 0,  -- includes RAM and device state
            size        INTEGER,
            PRIMARY KEY (vm_name, drive, name)
        );
        """
    )


def _v3(db: sqlite3.Connection) -> None:
    """Process identity: the start time (clock ticks since boot) beside each PID, so
    "is it still that process?" is an exact comparison, never a guess after PID reuse."""
    _run_script(db,
        """
        ALTER TABLE vms ADD COLUMN qemu_start INTEGER;
        ALTER TABLE vms ADD COLUMN runner_start INTEGER;
        """
    )


def _v4(db: sqlite3.Connection) -> None:
    """The host ports QEMU really bound for the user-net forwards of a running VM (JSON:
    ``host: auto`` ports get a free one at each start), NULL while it does not run.
    Self-contained (one new column): renumber it freely when migrations are merged."""
    _run_script(db,
        """
        ALTER TABLE vms ADD COLUMN ports_json TEXT;
        """
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3, _v4)
SCHEMA_VERSION = len(MIGRATIONS)
