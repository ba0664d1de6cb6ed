"""Storage lifecycle: create missing disks before a start (linked clones on a base
image), refuse two VMs on one writable disk, purge only what maqet created.

The storage *types* (keys, validation, QEMU arguments) live in
``maqet_engine.definition.storage``; this package does what touches the host: qemu-img,
files, and their registration in the state store (``state.storage_records``).
"""

from maqet_engine.storage.claims import check_claims
from maqet_engine.storage.prepare import prepare_storage
from maqet_engine.storage.purge import purge_files, purge_orphans

__all__ = ["check_claims", "prepare_storage", "purge_files", "purge_orphans"]
