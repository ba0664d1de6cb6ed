"""One writable disk, one VM: refuse at define time what QEMU's image locking would
only refuse at start (or, across hosts sharing storage, not at all).

Within one definition ``spec.storage`` already refuses duplicates; this compares a
definition with every *other* stored VM. Read-only users may share an image, and a
base image may back any number of overlays, but nobody may write a file that another
VM uses, nor the base image under another VM's overlay.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from maqet_engine.definition import default_registry
from maqet_engine.errors import StateConflict
from maqet_engine.storage.prepare import spec_data
from maqet_engine.store import Store


def file_uses(data: Mapping[str, Any]) -> Iterator[tuple[str, str, bool, str]]:
    """``(real path, storage name, writes it, how)`` for every file an entry uses."""
    registry = default_registry()
    for entry in data.get("storage") or []:
        if entry.get("type") not in registry:
            continue
        for claim in registry.get(entry["type"]).claims(entry):
            if claim.key == "file":
                yield os.path.realpath(claim.value), entry["name"], claim.exclusive, "disk"
        if entry.get("backing"):
            yield os.path.realpath(entry["backing"]), entry["name"], False, "backing image"


def check_claims(store: Store, spec: Any) -> None:
    """Raise :class:`StateConflict` if ``spec`` and another stored VM would share a
    file that either of them writes; the message names the other VM and its entry."""
    data = spec_data(spec)
    name = str(data["name"])
    mine = list(file_uses(data))
    if not mine:
        return
    for record in store.list_vms():
        if record.name == name:
            continue
        theirs = {}
        for path, storage, writes, how in file_uses(record.spec_data):
            if path not in theirs or writes:
                theirs[path] = (storage, writes, how)
        for path, storage, writes, _how in mine:
            if path not in theirs:
                continue
            other_storage, other_writes, other_how = theirs[path]
            if not (writes or other_writes):
                continue
            raise StateConflict(
                f"storage {storage!r} of VM {name!r} {'writes' if writes else 'reads'} "
                f"{path}, which VM {record.name!r} {'writes' if other_writes else 'reads'} "
                f"as the {other_how} of its storage {other_storage!r}",
                hint="give each VM its own disk: a qcow2 overlay ('backing:') on a shared "
                     "base image is the cheap way; or make every user of it readonly",
            )
