"""The SQLite state store: the single source of truth for what exists."""

from maqet_engine.store.db import Store
from maqet_engine.store.records import EventRecord, VMRecord, VMStatus

__all__ = ["EventRecord", "Store", "VMRecord", "VMStatus"]
