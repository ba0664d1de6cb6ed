"""Store rows of named networks (schema v4 tables ``networks`` and
``network_endpoints``), as functions taking a :class:`Store`.

A network's definition is stored like a VM's (canonical JSON and its hash). The host
endpoints it claims (``udp:GROUP:PORT`` of a segment, ``udp:ADDRESS:PORT`` of each end
of a link) are rows with a UNIQUE key, written in the same transaction as the network:
two networks can never claim one endpoint, even when two processes add them at once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence

from maqet_engine.errors import AlreadyExists, NetworkNotFound, StateConflict
from maqet_engine.frozen import Frozen
from maqet_engine.store.db import Store
from maqet_engine.store.records import VMRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class NetworkRecord(Frozen):
    __slots__ = ("id", "name", "spec_json", "spec_hash", "created_at", "updated_at")
    id: int
    name: str
    spec_json: str
    spec_hash: str
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> NetworkRecord:
        return cls(id=row["id"], name=row["name"], spec_json=row["spec_json"],
                   spec_hash=row["spec_hash"], created_at=row["created_at"],
                   updated_at=row["updated_at"])

    @property
    def spec_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.spec_json)
        return data


def get_network(store: Store, name: str) -> NetworkRecord | None:
    rows = store.query("SELECT * FROM networks WHERE name = ?", (name,))
    return NetworkRecord.from_row(rows[0]) if rows else None


def require_network(store: Store, name: str) -> NetworkRecord:
    record = get_network(store, name)
    if record is None:
        raise NetworkNotFound(name)
    return record


def list_networks(store: Store) -> list[NetworkRecord]:
    return [NetworkRecord.from_row(r)
            for r in store.query("SELECT * FROM networks ORDER BY name")]


def endpoints_of(store: Store, name: str) -> list[str]:
    rows = store.query("SELECT endpoint FROM network_endpoints WHERE network = ?"
                       " ORDER BY endpoint", (name,))
    return [r["endpoint"] for r in rows]


def _claim(db: sqlite3.Connection, name: str, endpoints: Sequence[str]) -> None:
    """Claim ``endpoints`` for network ``name`` (its old claims are dropped first)."""
    db.execute("DELETE FROM network_endpoints WHERE network = ?", (name,))
    for endpoint in endpoints:
        row = db.execute("SELECT network FROM network_endpoints WHERE endpoint = ?",
                         (endpoint,)).fetchone()
        if row is not None:
            raise StateConflict(
                f"network {name!r} would use {endpoint.removeprefix('udp:')}, which network "
                f"{row['network']!r} uses already",
                hint="set another group/port (a link: another end) for one of them")
        db.execute("INSERT INTO network_endpoints (endpoint, network) VALUES (?, ?)",
                   (endpoint, name))


def insert_network(store: Store, name: str, spec_json: str, spec_hash: str,
                   endpoints: Sequence[str]) -> NetworkRecord:
    """Store a new network and claim its endpoints, all or nothing.

    :raise AlreadyExists: a network of that name exists.
    :raise StateConflict: another network claims one of ``endpoints``.
    """
    now = time.time()
    with store.write() as db:
        try:
            db.execute("INSERT INTO networks (name, spec_json, spec_hash, created_at,"
                       " updated_at) VALUES (?, ?, ?, ?, ?)",
                       (name, spec_json, spec_hash, now, now))
        except sqlite3.IntegrityError as err:
            raise AlreadyExists(f"a network named {name!r} already exists") from err
        _claim(db, name, endpoints)
    return require_network(store, name)


def update_network(store: Store, name: str, spec_json: str, spec_hash: str,
                   endpoints: Sequence[str]) -> NetworkRecord:
    """Replace a network's definition and its endpoint claims, all or nothing."""
    with store.write() as db:
        cur = db.execute("UPDATE networks SET spec_json = ?, spec_hash = ?, updated_at = ?"
                         " WHERE name = ?", (spec_json, spec_hash, time.time(), name))
        if cur.rowcount == 0:
            raise NetworkNotFound(name)
        _claim(db, name, endpoints)
    return require_network(store, name)


def delete_network(store: Store, name: str, *,
                   guard: Callable[[list[VMRecord]], None] | None = None) -> bool:
    """Delete a network and its endpoint claims. ``guard`` sees every VM row inside the
    same write transaction and raises to refuse (a network VMs use): no VM can be
    defined between its check and the deletion."""
    with store.write() as db:
        if guard is not None:
            guard([VMRecord.from_row(r) for r in db.execute("SELECT * FROM vms")])
        db.execute("DELETE FROM network_endpoints WHERE network = ?", (name,))
        return db.execute("DELETE FROM networks WHERE name = ?", (name,)).rowcount > 0
