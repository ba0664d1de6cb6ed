"""Before a start: create the disk images a definition names but that do not exist,
and write its cloud-init seed.

A qcow2 entry with ``backing`` becomes an overlay on that base image (a linked
clone: only the blocks the VM changes are stored); one with ``image`` an overlay on
the image fetched into the image cache (:mod:`.images`). Every file created is
registered with its owner VM, so ``--purge`` later deletes exactly these (never a
cached image). Creation is atomic: the image is written under a temporary name and
linked into place, so a crash never leaves a half-made disk that would later pass for
the real one. A VM with ``cloud_init`` gets its NoCloud seed (``cidata.iso`` in its
directory) written when its content changed, and registered the same way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import ConfigError
from maqet_engine.paths import Paths
from maqet_engine.storage import images, qcow2, qemu_img
from maqet_engine.store import Store
from maqet_engine.store import storage_records as records

Progress = images.Progress


def spec_data(spec: Any) -> Mapping[str, Any]:
    """A :class:`~maqet_engine.definition.Spec` or its ``data`` mapping."""
    return spec.data if hasattr(spec, "data") else spec


def disk_entries(spec: Any) -> list[tuple[int, Mapping[str, Any]]]:
    """``(index, entry)`` of the disk images (qcow2, raw) of a normalized spec."""
    return [(i, e) for i, e in enumerate(spec_data(spec).get("storage") or [])
            if e.get("type") in C.DISK_IMAGE_TYPES]


def prepare_storage(paths: Paths, store: Store, spec: Any, *, check_mode: bool = False,
                    progress: Progress | None = None,
                    seed: bool = True) -> list[dict[str, Any]]:
    """Create the VM's missing disks and write its cloud-init seed; return what was (or,
    in check mode, would be) done. Check mode reads the image cache, never the network.

    :param spec: the normalized spec (or its data) of the VM about to start.
    :param progress: ``progress(done_bytes, total_or_None)`` while an image downloads.
    :param seed: write (or delete) the cloud-init seed; False while the VM runs on
        (the guest reads it at its next boot, from the definition of that start).
    :return: actions ``{"action": "create_disk", "storage", "path", "size", "backing"}``
        (``backing``: the base image's path, or ``sha256:<hex>`` of a cached image),
        ``fetch_image`` (``location``, ``digest``, ``size``: an image not yet cached),
        ``write_seed`` (``path``, ``instance_id``), ``delete_file`` (a seed left from a
        removed ``cloud_init``; the known_hosts of the instance a new seed replaces).
    :raise ConfigError: a missing disk without ``size`` (nor ``backing`` or ``image``),
        a parent directory that does not exist outside the VM's own directory, an
        existing file that is not in the format its entry says, a checksum mismatch or
        a file that is no disk image, a size smaller than its image.
    :raise NotFoundError: an image that is not there (no such file, HTTP 404).
    :raise RuntimeFailure: qemu-img refused (its message is included), a download failed.
    :raise HostError: the image cache cannot be written (disk full).
    """
    from maqet_engine.trust import check_vm_dir

    data = spec_data(spec)
    vm_name = str(data["name"])
    vm_dir = paths.vm_data(vm_name).root
    check_vm_dir(paths, vm_name)  # disks are made (and later opened by root) in there
    actions: list[dict[str, Any]] = []
    for index, entry in disk_entries(data):
        where = f"storage[{index}]"
        target = Path(entry["file"])
        if target.exists():
            _check_format(target, entry, where)
            continue
        size, backing = entry.get("size"), entry.get("backing")
        if entry.get("image"):
            _check_parent(target, vm_dir, entry, where)
            if not check_mode:
                target.parent.mkdir(mode=C.PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            actions += images.prepare_image_disk(paths, store, vm_name, entry,
                                                 check_mode=check_mode, progress=progress)
            continue
        if size is None and backing is None:
            raise ConfigError(f"storage entry {entry['name']!r}: {target} does not exist and "
                              "no size is given to create it", path=f"{where}.size",
                              hint="give 'size' (such as 10G), or point 'file' at an "
                              "existing image")
        _check_parent(target, vm_dir, entry, where)
        actions.append({"action": "create_disk", "storage": entry["name"],
                        "path": str(target), "size": size, "backing": backing})
        if check_mode:
            continue
        target.parent.mkdir(mode=C.PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        _create(target, entry, size, backing, what=f"create disk {entry['name']} of "
                f"VM {vm_name!r}")
        records.register_file(store, target, vm_name, entry["name"])
    if seed:
        actions += _prepare_seed(paths, store, vm_name, data.get("cloud_init"),
                                 check_mode=check_mode)
    return actions


def _check_parent(target: Path, vm_dir: Path, entry: Mapping[str, Any], where: str) -> None:
    if not target.parent.is_dir() and not target.parent.is_relative_to(vm_dir):
        raise ConfigError(f"storage entry {entry['name']!r}: directory {target.parent} "
                          "does not exist", path=f"{where}.file",
                          hint="create it first, or use a relative path (the VM's "
                          "own directory)")


def _prepare_seed(paths: Paths, store: Store, vm_name: str,
                  cloud_init: Mapping[str, Any] | None, *,
                  check_mode: bool) -> list[dict[str, Any]]:
    """Write the VM's NoCloud seed when its files differ from what is there (the image
    bytes carry a build time: compared by content, see maqet_engine.cloudinit), and
    register it; without ``cloud_init``, delete a seed maqet wrote earlier."""
    target = paths.vm_data(vm_name).cloud_init_seed
    if cloud_init is None:
        row = records.get_file(store, target)
        if row is None or row.vm_name != vm_name:
            return []
        if not check_mode:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            records.forget_file(store, target)
        return [{"action": "delete_file", "path": str(target)}]
    from maqet_engine.cloudinit import build_seed, write_seed

    seed = build_seed(cloud_init, vm_name=vm_name)
    action = {"action": "write_seed", "path": str(target), "instance_id": seed.instance_id}
    # A new seed is a new instance: cloud-init makes new host keys and prints them; the
    # old instance's known_hosts would only make ssh refuse the guest until they come.
    known_hosts = paths.vm_data(vm_name).known_hosts
    stale = [{"action": "delete_file", "path": str(known_hosts)}] \
        if known_hosts.exists() else []
    if check_mode:
        return [] if _holds(target, seed) else [action, *stale]
    target.parent.mkdir(mode=C.PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    written = write_seed(seed, target)
    if written.changed or records.get_file(store, target) is None:
        records.register_file(store, target, vm_name, C.CLOUD_INIT_NODE_NAME)
    if not written.changed:
        return []
    with contextlib.suppress(FileNotFoundError):
        known_hosts.unlink()
    return [action, *stale]


def _holds(target: Path, seed: Any) -> bool:
    """Whether ``target`` already is an image of ``seed``'s files (check mode)."""
    from maqet_engine.cloudinit.image import holds

    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as image:
        return holds(image, seed.files(), label=C.CLOUD_INIT_LABEL)


def _create(target: Path, entry: Mapping[str, Any], size: int | None, backing: str | None,
            *, what: str) -> None:
    temporary = target.with_name(f".{target.name}.maqet-{os.getpid()}.tmp")
    backing_fmt = None
    if backing is not None:
        backing_fmt = str(qemu_img.info(backing, what=f"{what}: read its backing image")
                          ["format"])
    try:
        qemu_img.create(temporary, entry["type"], size=size, backing=backing,
                        backing_fmt=backing_fmt, what=what)
        os.chmod(temporary, C.PRIVATE_FILE_MODE)  # guest data: the owner's only
        os.link(temporary, target)  # fails rather than replace a file made meanwhile
    except FileExistsError:
        pass  # another start created it first: theirs is as good as ours
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _check_format(target: Path, entry: Mapping[str, Any], where: str) -> None:
    """A qcow2 entry must name a qcow2 file (4-byte magic; cheap, no qemu-img)."""
    if entry["type"] != "qcow2" or not target.is_file():
        return
    try:
        with target.open("rb") as fh:
            magic = fh.read(len(qcow2.MAGIC))
    except OSError:
        return  # QEMU will say what is wrong with it
    if magic != qcow2.MAGIC:
        raise ConfigError(f"storage entry {entry['name']!r}: {target} is not a qcow2 image",
                          path=f"{where}.type",
                          hint="set type: raw for a raw image, or convert it with "
                          "'qemu-img convert -O qcow2'")
