"""The SQLite state store: the single source of truth for what exists."""

from maqet_engine.state.records import EventRecord, VMRecord, VMStatus
from maqet_engine.state.store import Store

__all__ = ["EventRecord", "Store", "VMRecord", "VMStatus"]
