"""Snapshots: offline (VM stopped, qemu-img) and live (VM running: QMP snapshot jobs
with RAM and device state), behind one desired-state API (:mod:`.api`).

The images hold the snapshots (qcow2 internal snapshots); the state store adds
metadata (``state.storage_records``). Listing always reads structured data: the
image's own snapshot table offline (:mod:`.qcow2`, falling back to ``qemu-img info
--output=json`` for anything it does not fully understand), ``query-named-block-nodes``
live.
"""

from maqet_engine.snapshots.api import ensure_snapshot, list_snapshots

__all__ = ["ensure_snapshot", "list_snapshots"]
