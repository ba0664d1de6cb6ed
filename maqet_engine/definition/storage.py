"""Storage entries: one class per type, and the registry that maps ``type`` to it.

A type declares its keys (:attr:`StorageType.fields`, on top of ``name`` and
``type``), its extra rules (:meth:`StorageType.normalize`), what it holds exclusively
(:meth:`StorageType.claims`) and its QEMU arguments (:meth:`StorageType.argv`).
Adding a type is writing one class and registering it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from maqet_engine import constants as C
from maqet_engine.definition.check import (
    PathContext,
    check_path,
    check_section,
    join,
    require_list,
    require_mapping,
    show,
)
from maqet_engine.definition.hostpaths import check_host_file, check_share
from maqet_engine.definition.machine import DeviceSlots, NoSlotLeft
from maqet_engine.definition.qemuopts import json_arg, opt_value
from maqet_engine.definition.schema import STORAGE_COMMON, Base, Exists, Field, Kind
from maqet_engine.errors import ConfigError


@dataclass(frozen=True)
class StorageArgs:
    """QEMU arguments of one entry. ``controllers`` are emitted once per VM, before
    every entry's ``args`` (a SCSI disk needs its controller first)."""

    args: tuple[str, ...]
    controllers: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Claim:
    """A host resource an entry uses: two entries may share it only when neither
    claims it ``exclusive`` (two read-only users of one image are fine)."""

    key: str
    value: str
    exclusive: bool
    hint: str = "use another one, or make both entries read-only"


class StorageType(ABC):
    """One storage type. Instances are stateless; a registry holds one of each."""

    type_name: ClassVar[str]
    doc: ClassVar[str]
    fields: ClassVar[tuple[Field, ...]]

    def all_fields(self) -> tuple[Field, ...]:
        return STORAGE_COMMON + self.fields

    def normalize(self, entry: dict[str, Any], *, path: str, ctx: PathContext) -> dict[str, Any]:
        """Rules beyond single keys; ``entry`` already passed the field checks."""
        return entry

    def claims(self, entry: Mapping[str, Any]) -> Iterable[Claim]:
        return ()

    @abstractmethod
    def argv(self, entry: Mapping[str, Any], slots: DeviceSlots) -> StorageArgs:
        """QEMU arguments for a normalized entry; ``slots`` places bus devices
        (it raises :class:`NoSlotLeft` when the machine has no room)."""


class StorageRegistry:
    """Storage types by name, in registration order. Build one with
    :func:`default_registry`; registering on it changes no other registry."""

    def __init__(self) -> None:
        self._types: dict[str, StorageType] = {}

    def register(self, cls: type[StorageType]) -> type[StorageType]:
        """Add a type (usable as a decorator); a name may be registered once."""
        name = cls.type_name
        if name in self._types:
            raise ValueError(f"storage type {name!r} is already registered")
        self._types[name] = cls()
        return cls

    def get(self, type_name: str) -> StorageType:
        """The type registered as ``type_name``; :class:`KeyError` if none."""
        return self._types[type_name]

    def types(self) -> tuple[str, ...]:
        return tuple(self._types)

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types


def _blockdev(name: str, driver: str, filename: str, readonly: bool, *,
              device: bool = False) -> str:
    protocol: dict[str, Any] = {"driver": "host_device" if device else "file",
                                "filename": filename}
    node: dict[str, Any] = {"driver": driver, "node-name": name}
    if readonly:
        protocol["read-only"] = True
        node["read-only"] = True
    node["file"] = protocol
    return json_arg(node)


_INTERFACE = Field("interface", Kind.ENUM, "Bus the guest sees the disk on. `scsi` adds "
                   "one `virtio-scsi-pci` controller per VM. `ide` disks and CD-ROMs take "
                   "the machine's IDE positions in order: 4 on `pc` (the default machine), "
                   "6 on `q35`.",
                   default=C.DEFAULT_DISK_INTERFACE, choices=C.DISK_INTERFACES)
_READONLY = Field("readonly", Kind.BOOL, "Attach read-only (not with `interface: ide`).",
                  default=False)
_DEVICE = Field("device", Kind.BOOL, "`file` is a host block device (e.g. `/dev/sdb`, an "
                "LVM volume) that the guest gets whole; without it maqet refuses device "
                "nodes.", default=False)


class _DiskImage(StorageType):
    """A writable disk image that maqet creates when it does not exist."""

    def normalize(self, entry: dict[str, Any], *, path: str, ctx: PathContext) -> dict[str, Any]:
        if entry["file"] is None:
            entry["file"] = os.path.normpath(ctx.vm_dir / f"{entry['name']}.{self.type_name}")
        target = Path(entry["file"])
        if target.is_dir():
            raise ConfigError(f"{show(entry['file'])} is a directory, not a disk image",
                              path=join(path, "file"), hint="give the path of an image file")
        if not target.exists() and entry["size"] is None and entry.get("backing") is None \
                and entry.get("image") is None:
            raise ConfigError(f"is required: {show(target)} does not exist yet and maqet "
                              "creates it", path=join(path, "size"),
                              hint="give the size of the new disk such as 10G, or point "
                              "'file' at an existing image")
        where = join(path, "file")
        check_host_file(entry["file"], where, write=not entry["readonly"],
                        device=entry["device"], maqet_dirs=ctx.maqet_dirs, vm_dir=ctx.vm_dir)
        if entry.get("backing") is not None:
            check_host_file(entry["backing"], join(path, "backing"), write=False,
                            device=False, maqet_dirs=ctx.maqet_dirs, vm_dir=ctx.vm_dir)
        if not entry["device"]:
            del entry["device"]  # stored only when set: older definitions keep their hash
        if entry["readonly"] and entry["interface"] == "ide":
            raise ConfigError("cannot be true with interface 'ide' (QEMU's ide-hd has no "
                              "read-only mode)", path=join(path, "readonly"),
                              hint="use interface virtio or scsi for a read-only disk")
        return entry

    def claims(self, entry: Mapping[str, Any]) -> Iterable[Claim]:
        return (Claim("file", entry["file"], exclusive=not entry["readonly"]),)

    def argv(self, entry: Mapping[str, Any], slots: DeviceSlots) -> StorageArgs:
        name = entry["name"]
        blockdev = _blockdev(name, self.type_name, entry["file"], entry["readonly"],
                             device=bool(entry.get("device")))
        ids = f"drive={name},id={name}"
        match entry["interface"]:
            case "ide":
                device = f"ide-hd{slots.ide()},{ids}"
                return StorageArgs(("-blockdev", blockdev, "-device", device))
            case "scsi":
                controller = ("-device", f"{C.SCSI_CONTROLLER_MODEL},id={C.SCSI_CONTROLLER_ID}")
                device = f"scsi-hd,bus={C.SCSI_CONTROLLER_ID}.0,{ids}"
                return StorageArgs(("-blockdev", blockdev, "-device", device), (controller,))
        return StorageArgs(("-blockdev", blockdev, "-device", f"virtio-blk-pci,{ids}"))


def _file_field(kind: str) -> Field:
    return Field("file", Kind.PATH, f"The {kind} image, relative to the VM's own directory "
                 "(never the current directory); created there when it does not exist.",
                 base=Base.VM_DIR, default_doc="`<name>." + kind + "` in the VM's directory")


def _size_field(*, image: bool = False) -> Field:
    extra = (" With `image`: the disk's size, at least the image's (unset: the image's "
             "own size).") if image else ""
    return Field("size", Kind.SIZE, "Size of a disk maqet creates; a bare number is bytes, "
                 "as with qemu-img. Required when `file` does not exist (and no `backing`"
                 + (" or `image`" if image else "") + ")." + extra,
                 maximum=C.MAX_DISK_BYTES, bare_unit=C.DISK_BARE_UNIT)


# A valid checksum, to check an image location on its own (see _image_source).
_ANY_CHECKSUM = f"{C.IMAGE_DIGEST_ALGORITHM}:{'0' * C.IMAGE_DIGEST_HEX_LEN}"


def _image_source(image: str, checksum: str | None, path: str,
                  ctx: PathContext) -> tuple[str, str | None]:
    """The normalized ``(image, checksum)`` of an entry: an absolute path for a local
    image (``file://`` URLs become paths), a URL as given otherwise; the checksum with a
    lower-case digest. A local image must exist, and is judged like a backing image.

    The image package's parser checks location and checksum together; the location is
    parsed first with a valid checksum, so that each error names the key at fault.
    """
    from maqet_engine.images.source import parse_source

    try:
        parse_source(image, _ANY_CHECKSUM, base_dir=ctx.definition_dir)
    except ConfigError as err:
        raise ConfigError(err.message, path=join(path, "image"), hint=err.hint) from None
    try:
        source = parse_source(image, checksum, base_dir=ctx.definition_dir)
    except ConfigError as err:
        raise ConfigError(err.message, path=join(path, "checksum"), hint=err.hint) from None
    if not source.remote:
        written = image if "://" not in image else source.location  # a file:// URL's path
        check_path(written, join(path, "image"), base=ctx.definition_dir, exists=Exists.FILE)
        check_host_file(source.location, join(path, "image"), write=False, device=False,
                        maqet_dirs=ctx.maqet_dirs, vm_dir=ctx.vm_dir)
    return source.location, source.checksum


class Qcow2Storage(_DiskImage):
    type_name = "qcow2"
    doc = ("A qcow2 disk image; may be a linked clone (overlay) of a `backing` image, or "
           "of an `image` that maqet fetches into its image cache.")
    fields = (
        _file_field("qcow2"),
        _size_field(image=True),
        _INTERFACE,
        _READONLY,
        _DEVICE,
        Field("backing", Kind.PATH, "Base image for a new overlay (linked clone), relative "
              "to the directory of the definition file; must exist. Used only when `file` "
              "is created; the base itself is never written.",
              base=Base.DEFINITION, exists=Exists.FILE),
        Field("image", Kind.STR, "Image the disk starts from: a local path (relative to "
              "the directory of the definition file; must exist), a `file://` URL, or an "
              "`http://`/`https://` URL. Fetched once into maqet's image cache when the "
              "VM starts (qcow2 or raw, told from its content); the disk (`file`) is a "
              "qcow2 overlay on the cached image, created only when `file` does not exist. "
              "Not with `backing`. See docs/guests.md.", what="image location",
              pattern_help="a path, or a `file://`, `http://` or `https://` URL"),
        Field("checksum", Kind.STR, "The image's checksum, as `ansible.builtin.get_url` "
              "takes it: `sha256:<64 hex digits>`, or `sha256:<URL>` of a SHA256SUMS file "
              "that lists the image's file name. Required for an `http(s)` image; a local "
              "image without one is hashed as it is copied. Needs `image`.",
              requires=("image",), what="checksum",
              pattern_help="`sha256:<hex>`, `sha256:<URL>`"),
    )

    def normalize(self, entry: dict[str, Any], *, path: str, ctx: PathContext) -> dict[str, Any]:
        image, checksum = entry.pop("image"), entry.pop("checksum")
        if image is not None:  # stored only when set: older definitions keep their hash
            if entry["backing"] is not None:
                raise ConfigError("cannot be combined with 'image'", path=join(path, "backing"),
                                  hint="a disk from an image is already an overlay (on the "
                                  "cached image): remove one of the two")
            if entry["device"]:
                raise ConfigError("cannot be combined with 'image'", path=join(path, "device"),
                                  hint="a disk from an image is a qcow2 overlay file, never "
                                  "a host block device")
            entry["image"], entry["checksum"] = _image_source(image, checksum, path, ctx)
        return super().normalize(entry, path=path, ctx=ctx)


class RawStorage(_DiskImage):
    type_name = "raw"
    doc = "A raw disk image, or a whole host block device with `device: true`."
    fields = (_file_field("raw"), _size_field(), _INTERFACE, _READONLY, _DEVICE)


class CdromStorage(StorageType):
    type_name = "cdrom"
    doc = "An ISO image on an IDE CD-ROM drive (takes an IDE position); always read-only."
    fields = (
        Field("file", Kind.PATH, "The ISO image, relative to the directory of the "
              "definition file; must exist.", required=True,
              base=Base.DEFINITION, exists=Exists.FILE),
    )

    def normalize(self, entry: dict[str, Any], *, path: str, ctx: PathContext) -> dict[str, Any]:
        check_host_file(entry["file"], join(path, "file"), write=False, device=False,
                        maqet_dirs=ctx.maqet_dirs, vm_dir=ctx.vm_dir)
        return entry

    def claims(self, entry: Mapping[str, Any]) -> Iterable[Claim]:
        return (Claim("file", entry["file"], exclusive=False),)

    def argv(self, entry: Mapping[str, Any], slots: DeviceSlots) -> StorageArgs:
        name = entry["name"]
        blockdev = _blockdev(name, "raw", entry["file"], readonly=True)
        device = f"ide-cd{slots.ide()},drive={name},id={name}"
        return StorageArgs(("-blockdev", blockdev, "-device", device))


class VirtfsStorage(StorageType):
    type_name = "virtfs"
    doc = ("A host directory shared with the guest over 9p (`mount -t 9p -o trans=virtio "
           "TAG /mnt`).")
    fields = (
        Field("path", Kind.PATH, "Host directory to share, relative to the directory of "
              "the definition file; must exist. Refused unless `allow_dangerous`, "
              "after following symlinks (when stored and again at each start): "
              + ", ".join(f"`{p}`" for p in C.SHARE_DENIED_EXACT) + ", and anything in "
              + ", ".join(f"`{p}`" for p in C.HOST_SYSTEM_DIRS) + ".",
              required=True, base=Base.DEFINITION, exists=Exists.DIR),
        Field("mount_tag", Kind.STR, "Tag the guest mounts; unique within the VM.",
              default_doc="the entry's `name`", pattern=C.MOUNT_TAG_RE,
              pattern_help=C.MOUNT_TAG_HELP, what="mount tag"),
        Field("security_model", Kind.ENUM, "How guest file ownership and modes are stored "
              "(see QEMU's `-fsdev`).", default=C.DEFAULT_VIRTFS_SECURITY_MODEL,
              choices=C.VIRTFS_SECURITY_MODELS),
        Field("readonly", Kind.BOOL, "Share read-only.", default=False),
        Field("allow_dangerous", Kind.BOOL, "Allow sharing a system directory.",
              default=False),
    )

    def normalize(self, entry: dict[str, Any], *, path: str, ctx: PathContext) -> dict[str, Any]:
        if entry["mount_tag"] is None:
            entry["mount_tag"] = entry["name"]
        check_share(entry["path"], join(path, "path"), allow_dangerous=entry["allow_dangerous"])
        return entry

    def claims(self, entry: Mapping[str, Any]) -> Iterable[Claim]:
        return (Claim("mount_tag", entry["mount_tag"], exclusive=True,
                      hint="give each share its own mount_tag"),)

    def argv(self, entry: Mapping[str, Any], slots: DeviceSlots) -> StorageArgs:
        name = entry["name"]
        fsdev = (f"local,id={name},path={opt_value(entry['path'])},"
                 f"security_model={entry['security_model']}")
        if entry["readonly"]:
            fsdev += ",readonly=on"
        device = f"virtio-9p-pci,fsdev={name},mount_tag={entry['mount_tag']}"
        return StorageArgs(("-fsdev", fsdev, "-device", device))


def seed_disk_argv(seed: str) -> tuple[str, ...]:
    """The cloud-init seed: a read-only raw virtio disk (q35's CD-ROM is AHCI, which the
    Debian cloud kernel lacks; every cloud kernel has virtio-blk), spelled like the
    other disks, after them (the guest's first disks keep their names)."""
    name = C.CLOUD_INIT_NODE_NAME
    return ("-blockdev", _blockdev(name, "raw", seed, readonly=True),
            "-device", f"virtio-blk-pci,drive={name},id={name}")


BUILTIN_STORAGE_TYPES: tuple[type[StorageType], ...] = (
    Qcow2Storage, RawStorage, VirtfsStorage, CdromStorage,
)


def default_registry() -> StorageRegistry:
    """A new registry holding the built-in types (a fresh instance on every call)."""
    registry = StorageRegistry()
    for cls in BUILTIN_STORAGE_TYPES:
        registry.register(cls)
    return registry


def normalize_storage(items: object, *, path: str, ctx: PathContext,
                      registry: StorageRegistry) -> list[dict[str, Any]]:
    """Validate and normalize the ``storage`` list."""
    entries: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    claimed: dict[tuple[str, str], tuple[str, bool]] = {}
    for index, raw in enumerate(require_list(items, path, "[{name: disk, type: qcow2}]")):
        here = join(path, index)
        entry = _normalize_entry(require_mapping(raw, here, "a storage entry"), here, ctx,
                                 registry)
        if entry["name"] in names:
            raise ConfigError(f"{show(entry['name'])} is already the name of "
                              f"{names[entry['name']]}", path=join(here, "name"),
                              hint="storage names must be unique within the VM")
        names[entry["name"]] = here
        for claim in registry.get(entry["type"]).claims(entry):
            key = (claim.key, claim.value)
            if key in claimed and (claim.exclusive or claimed[key][1]):
                raise ConfigError(f"{show(claim.value)} is already used by {claimed[key][0]}",
                                  path=join(here, claim.key), hint=claim.hint)
            claimed.setdefault(key, (here, claim.exclusive))
        entries.append(entry)
    return entries


def _normalize_entry(raw: Mapping[Any, Any], path: str, ctx: PathContext,
                     registry: StorageRegistry) -> dict[str, Any]:
    type_name = raw.get("type")
    choices = ", ".join(registry.types())
    if type_name is None:
        raise ConfigError("is required", path=join(path, "type"), hint=f"use one of {choices}")
    if not isinstance(type_name, str) or type_name not in registry:
        raise ConfigError(f"{show(type_name)} is not a storage type", path=join(path, "type"),
                          hint=f"use one of {choices}")
    kind = registry.get(type_name)
    elsewhere = {other: [f.key for f in registry.get(other).all_fields()]
                 for other in registry.types() if other != type_name}
    fields = tuple(replace(f, choices=registry.types()) if f.key == "type" else f
                   for f in kind.all_fields())
    entry = check_section(raw, fields, path, ctx, elsewhere)
    if entry["name"] == C.SCSI_CONTROLLER_ID:
        raise ConfigError(f"{show(entry['name'])} is reserved for the SCSI controller",
                          path=join(path, "name"), hint="choose another name")
    return kind.normalize(entry, path=path, ctx=ctx)


def check_device_slots(entries: list[dict[str, Any]], *, machine: str | None, path: str,
                       registry: StorageRegistry) -> None:
    """Refuse storage the machine has no room for (QEMU would fail at start)."""
    slots = DeviceSlots(machine)
    for index, entry in enumerate(entries):
        try:
            registry.get(entry["type"]).argv(entry, slots)
        except NoSlotLeft as err:
            raise ConfigError(f"no room for this device: {err}", path=join(path, index),
                              hint="attach disks with interface virtio or scsi instead of "
                              "ide") from None
