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
    """Named networks (docs/networks.md): one row per network, the host endpoints its
    definition claims (a multicast group:port, a link's two ends) under a UNIQUE key so
    that two networks can never share one, and beside each VM the networks its running
    QEMU was started with (``{name: spec_hash}``), so that changing a network marks the
    VMs running on it ``restart_required``. Self-contained: it only adds."""
    _run_script(db,
        """
        CREATE TABLE networks (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            name        TEXT NOT NULL UNIQUE,
            spec_json   TEXT NOT NULL,
            spec_hash   TEXT NOT NULL,
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL
        );
        CREATE TABLE network_endpoints (
            endpoint    TEXT PRIMARY KEY,  -- 'udp:239.255.12.34:24567', 'udp:127.0.0.1:30100'
            network     TEXT NOT NULL REFERENCES networks (name) ON DELETE CASCADE
        );
        ALTER TABLE vms ADD COLUMN started_networks TEXT;
        """
    )


def _v5(db: sqlite3.Connection) -> None:
    """Observability (issue 14): the operation id of each event (``maqet events --op``),
    and what retention pruned, counted per VM, kind and detail (a stop rung), so that
    counters derived from events (crashes, re-adoptions, stop rungs) never go down."""
    _run_script(db,
        """
        ALTER TABLE events ADD COLUMN op_id TEXT;
        CREATE INDEX events_by_op ON events (op_id) WHERE op_id IS NOT NULL;
        -- metrics count a few kinds (crashed, adopted, stop_rung) at every scrape
        CREATE INDEX events_by_kind ON events (kind, vm_name);
        CREATE TABLE event_totals (
            vm_name  TEXT NOT NULL,
            kind     TEXT NOT NULL,
            detail   TEXT NOT NULL DEFAULT '',  -- the rung of a stop_rung event
            count    INTEGER NOT NULL,
            PRIMARY KEY (vm_name, kind, detail)
        ) WITHOUT ROWID;
        """
    )


def _v6(db: sqlite3.Connection) -> None:
    """The host ports QEMU really bound for the user-net forwards of a running VM (JSON:
    ``host: auto`` ports get a free one at each start), NULL while it does not run.
    Self-contained (one new column): renumber it freely when migrations are merged."""
    _run_script(db,
        """
        ALTER TABLE vms ADD COLUMN ports_json TEXT;
        """
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3, _v4, _v5, _v6)
SCHEMA_VERSION = len(MIGRATIONS)
