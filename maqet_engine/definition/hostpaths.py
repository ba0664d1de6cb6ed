"""Which host files and directories a definition may hand to QEMU (docs/security.md).

QEMU opens its disks, CD-ROMs, kernel, initrd and backing images *before* it drops
to the ``maqet-qemu`` user, with the rights of whoever runs maqet: root, often. So a
definition (perhaps from elsewhere) is refused when it names

- maqet's own files: its store, locks, runtime directory, a VM's logs (disks in VM
  directories are fine: a new VM may take over a disk an old one left);
- a device node: a block device only with ``device: true`` on that disk entry (the
  guest then owns the whole device), anything else (character devices, FIFOs,
  sockets) never;
- a file in a host system directory: read into the guest (kernel, initrd, CD-ROM,
  backing image, local ``image``, read-only disk) from ``/etc``, ``/proc``, ``/sys``,
  ``/dev`` or ``/run``; written by the guest (a writable disk, a new image) there or
  in ``/boot`` or ``/usr``.

A shared directory (virtfs) is refused when it is, or is inside, a system directory
(``/etc``, ``/proc``, ``/sys``, ``/dev``, ``/boot``, ``/run``, ``/usr``), or is exactly
``/``, ``/root``, ``/home`` or ``/var``, unless ``allow_dangerous``.

Paths are judged after following symlinks, when the definition is stored *and again
when the VM starts* (a symlink re-pointed in between is caught; QEMU then gets the
resolved path).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import ConfigError

_LOG_NAMES = frozenset({C.RUNNER_LOG, C.QEMU_LOG, C.SERIAL_LOG})


def _inside(real: str, directories: Iterable[str]) -> str | None:
    for directory in directories:
        if real == directory or real.startswith(directory.rstrip("/") + "/"):
            return directory
    return None


def _shown(value: str, real: str) -> str:
    return repr(value) if real == value else f"{value!r} (really {real})"


def dangerous_share(real: str) -> bool:
    """A directory the guest must not get without ``allow_dangerous``."""
    return real in C.SHARE_DENIED_EXACT or _inside(real, C.HOST_SYSTEM_DIRS) is not None


def check_host_file(value: str, path: str, *, write: bool, device: bool,
                    maqet_dirs: Iterable[Path] = (), vm_dir: Path | None = None) -> str:
    """Refuse ``value`` (a file QEMU opens) per the module's policy; return the
    blockdev protocol driver it needs (``host_device`` for an allowed block device,
    else ``file``).

    :param write: the guest may write it (a writable disk, or a file maqet creates).
    :param device: the entry opted in to a block device (``device: true``).
    :param maqet_dirs: the installation's data and runtime directories.
    :param vm_dir: this VM's own directory (inside the data directory, but allowed).
    """
    real = os.path.realpath(value)
    shown = _shown(value, real)
    try:
        st: os.stat_result | None = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise ConfigError(f"{shown} cannot be accessed: {err.strerror}", path=path,
                          hint="give a file maqet can read") from None
    if st is not None and stat.S_ISBLK(st.st_mode):
        if device:
            return "host_device"
        raise ConfigError(f"{shown} is a block device", path=path,
                          hint="set 'device: true' on this entry if the guest should own "
                          "the whole device")
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{shown} is a device node, FIFO or socket, not an image file",
                          path=path, hint="give the path of an image file")
    if device:
        raise ConfigError(f"{shown} is not a block device, but 'device' is true", path=path,
                          hint="remove 'device: true' for an image file")
    # Disks in VM directories (this VM's, or one an earlier VM left) are fine: the
    # claims check keeps two VMs from writing one. The store, the locks, the runtime
    # directory and the logs are not.
    vms_root = os.path.realpath(vm_dir.parent) if vm_dir is not None else None
    for root in maqet_dirs:
        if _inside(real, [os.path.realpath(root)]) is None:
            continue
        in_vms = vms_root is not None and _inside(real, [vms_root]) is not None
        if not in_vms or os.path.basename(real) in _LOG_NAMES:
            raise ConfigError(f"{shown} is one of maqet's own files (its store, locks, "
                              "runtime directory or a VM's log)", path=path,
                              hint="give a file outside maqet's data and runtime directories")
    system = _inside(real, C.HOST_SYSTEM_DIRS if write else C.HOST_SECRET_DIRS)
    if system is not None:
        verb = "written by" if write else "read by"
        raise ConfigError(f"{shown} is in {system}, a host system directory; it would be "
                          f"{verb} the guest", path=path,
                          hint="copy the file somewhere else (or, for a disk, use a block "
                          "device with 'device: true')")
    return "file"


def check_share(value: str, path: str, *, allow_dangerous: bool) -> str:
    """Refuse a dangerous virtfs directory; return the resolved path."""
    real = os.path.realpath(value)
    if dangerous_share(real) and not allow_dangerous:
        shown = real if real == value else f"{value} (really {real})"
        raise ConfigError(f"{shown} is a host system directory; sharing it lets the guest "
                          "read or change it", path=path,
                          hint="set allow_dangerous: true on this entry if that is what "
                          "you want")
    return real


def recheck(data: dict[str, object], *, maqet_dirs: Iterable[Path], vm_dir: Path) -> None:
    """At start: judge every host path of a stored spec again, as it resolves *now*,
    and put the resolved directory of each share into ``data`` (a copy the caller owns).

    :raise ConfigError: a path that now resolves somewhere the policy refuses.
    """
    dirs = tuple(maqet_dirs)
    for key in ("kernel", "initrd"):
        if data.get(key):
            check_host_file(str(data[key]), key, write=False, device=False,
                            maqet_dirs=dirs, vm_dir=vm_dir)
    for index, entry in enumerate(data.get("storage") or []):  # type: ignore[union-attr]
        where = f"storage[{index}]"
        kind = entry["type"]
        if kind == "virtfs":
            entry["path"] = check_share(entry["path"], f"{where}.path",
                                        allow_dangerous=entry["allow_dangerous"])
            continue
        write = kind in ("qcow2", "raw") and not entry.get("readonly")
        if kind in ("qcow2", "raw", "cdrom") and os.path.lexists(entry["file"]):
            check_host_file(entry["file"], f"{where}.file", write=write,
                            device=bool(entry.get("device")), maqet_dirs=dirs, vm_dir=vm_dir)
        if entry.get("backing"):
            check_host_file(entry["backing"], f"{where}.backing", write=False, device=False,
                            maqet_dirs=dirs, vm_dir=vm_dir)
        image = entry.get("image")
        if image and "://" not in image and os.path.lexists(image):  # a local image
            check_host_file(image, f"{where}.image", write=False, device=False,
                            maqet_dirs=dirs, vm_dir=vm_dir)
