"""A small, read-only reader of a qcow2 image's header and internal snapshot table.

:func:`read_header` is what the image cache checks a base image with (format, virtual
size, backing file, features); :func:`read_snapshots` what offline snapshots list with.

Why: an idempotent offline snapshot operation first needs the image's snapshot list.
Asking ``qemu-img info --output=json`` for it costs a whole process start, about as
long as the operation itself; reading the header and the snapshot table takes a
fraction of a millisecond. Only used for a *stopped* VM (a running QEMU owns its
image and is asked through QMP instead); the operation that follows still goes through
qemu-img, which takes the image lock.

Never guesses: anything this reader does not fully understand (not qcow2, unknown
version, encryption, external data file, dirty/corrupt flags, unknown incompatible
features, a truncated or implausible table, names that are not UTF-8) raises
:class:`Unsupported`, and the caller asks qemu-img instead.

Layout (QEMU docs/interop/qcow2.txt; all numbers big-endian):

- header: ``magic`` "QFI\\xfb" (0), ``version`` u32 (4: 2 or 3), ``cluster_bits`` u32
  (20), ``crypt_method`` u32 (32), ``nb_snapshots`` u32 (60), ``snapshots_offset``
  u64 (64); v3 also ``incompatible_features`` u64 (72) and ``header_length`` u32 (100).
- snapshot table entry: ``l1_table_offset`` u64, ``l1_size`` u32, ``id_str_size`` u16,
  ``name_size`` u16, ``date_sec`` u32, ``date_nsec`` u32, ``vm_clock_nsec`` u64,
  ``vm_state_size`` u32, ``extra_data_size`` u32 (40 bytes), then the extra data
  (``vm_state_size_large`` u64, ``disk_size`` u64, ``icount`` u64; v3 must have the first
  two), the id string, the name, padding to a multiple of 8.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from maqet_engine.frozen import Frozen

MAGIC = b"QFI\xfb"
_HEADER_V2 = struct.Struct(">4sIQIIQIIQQIIQ")  # through snapshots_offset: 72 bytes
_HEADER_V3_TAIL = struct.Struct(">QQQII")  # incompatible .. header_length: 72-103
_ENTRY = struct.Struct(">QIHHIIQII")  # the fixed 40 bytes of a snapshot entry
_U64 = struct.Struct(">Q")

# incompatible feature bits that do not change how the snapshot table is stored
_HARMLESS_INCOMPATIBLE = (1 << 3) | (1 << 4)  # compression type, extended L2 entries
MAX_SNAPSHOTS = 65536  # QCOW_MAX_SNAPSHOTS
MAX_EXTRA_DATA = 1024  # QCOW_MAX_SNAPSHOT_EXTRA_DATA
MAX_TABLE_BYTES = 64 * 1024 * 1024  # QCOW_MAX_SNAPSHOTS_SIZE
_NO_ICOUNT = (1 << 64) - 1  # icount "-1": record/replay was off


class Unsupported(Exception):
    """This image is outside what the reader understands; ask qemu-img."""


class Header(Frozen):
    """The fields of a qcow2 header that callers decide on."""

    __slots__ = ("version", "backing_offset", "backing_size", "cluster_bits",
                 "virtual_size", "crypt_method", "incompatible", "nb_snapshots",
                 "snapshots_offset", "header_length")
    version: int
    backing_offset: int
    backing_size: int
    cluster_bits: int
    virtual_size: int
    crypt_method: int
    incompatible: int  # v3 incompatible feature bits (0 for v2)
    nb_snapshots: int
    snapshots_offset: int
    header_length: int

    @property
    def unknown_incompatible(self) -> int:
        """Incompatible bits beyond the harmless ones: dirty (0), corrupt (1), external
        data file (2), or a feature unknown here."""
        return self.incompatible & ~_HARMLESS_INCOMPATIBLE

    def backing_name(self, fd: int) -> str:
        """The backing file name this header points at ('' when there is none)."""
        if not self.backing_offset:
            return ""
        raw = _pread_exact(fd, min(self.backing_size, 1023), self.backing_offset,
                           "the backing file name")
        return raw.decode("utf-8", "replace")


class _Short(Exception):
    """The buffer ends inside entry ``args[0]``: read more."""


def _pread_exact(fd: int, size: int, offset: int, what: str) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.pread(fd, size - len(data), offset + len(data))
        if not chunk:
            raise Unsupported(f"truncated: {what} ends past the end of the file")
        data += chunk
    return data


def read_snapshots(path: Path | str) -> list[dict[str, Any]]:
    """The image's internal snapshots, in table order, shaped like the ``snapshots``
    of ``qemu-img info --output=json``: ``id``, ``name``, ``date-sec``, ``date-nsec``,
    ``vm-clock-sec``, ``vm-clock-nsec``, ``vm-state-size`` and, when recorded,
    ``icount``.

    :raise Unsupported: anything unexpected (see the module docstring).
    :raise OSError: the file cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return _read(fd)
    finally:
        os.close(fd)


def read_header(fd: int) -> Header:
    """The header of the qcow2 image open at ``fd``.

    :raise Unsupported: not qcow2, a version other than 2 or 3, implausible sizes, a
        truncated header. (Encryption and features are reported, not refused: callers
        decide.)
    """
    head = _pread_exact(fd, _HEADER_V2.size, 0, "the header")
    (magic, version, backing_off, backing_size, cluster_bits, virtual_size, crypt,
     _l1_size, _l1_off, _rc_off, _rc_clusters, nb_snapshots, snapshots_offset,
     ) = _HEADER_V2.unpack(head)
    if magic != MAGIC:
        raise Unsupported("not a qcow2 image")
    if version not in (2, 3):
        raise Unsupported(f"qcow2 version {version}")
    if not 9 <= cluster_bits <= 21:
        raise Unsupported(f"cluster_bits {cluster_bits}")
    incompatible, header_length = 0, _HEADER_V2.size
    if version == 3:
        tail = _pread_exact(fd, _HEADER_V3_TAIL.size, _HEADER_V2.size, "the v3 header")
        incompatible, _compatible, _autoclear, _refcount_order, header_length = \
            _HEADER_V3_TAIL.unpack(tail)
        if header_length < 104 or header_length > (1 << cluster_bits):
            raise Unsupported(f"header_length {header_length}")
    return Header(version=version, backing_offset=backing_off, backing_size=backing_size,
                  cluster_bits=cluster_bits, virtual_size=virtual_size, crypt_method=crypt,
                  incompatible=incompatible, nb_snapshots=nb_snapshots,
                  snapshots_offset=snapshots_offset, header_length=header_length)


def _read(fd: int) -> list[dict[str, Any]]:
    size = os.fstat(fd).st_size
    header = read_header(fd)
    if header.crypt_method != 0:
        raise Unsupported("encrypted image")
    if header.unknown_incompatible:
        raise Unsupported(f"incompatible features {header.incompatible:#x}")
    version, cluster_bits = header.version, header.cluster_bits
    nb_snapshots, snapshots_offset = header.nb_snapshots, header.snapshots_offset
    if nb_snapshots == 0:
        return []
    if nb_snapshots > MAX_SNAPSHOTS:
        raise Unsupported(f"{nb_snapshots} snapshots")
    if snapshots_offset % (1 << cluster_bits) or snapshots_offset >= size:
        raise Unsupported(f"snapshots_offset {snapshots_offset}")
    # the table's length is only known once read: start with a typical size, double
    # while an entry runs past the buffer (bounded by the file and QEMU's own limit)
    limit = min(size - snapshots_offset, MAX_TABLE_BYTES)
    want = min(limit, max(4096, nb_snapshots * 96))
    while True:
        table = _pread_exact(fd, want, snapshots_offset, "the snapshot table")
        try:
            return _entries(table, nb_snapshots, version)
        except _Short as short:
            if want >= limit:
                raise Unsupported(f"truncated snapshot table (entry {short})") from None
            want = min(limit, want * 2)


def _entries(table: bytes, count: int, version: int) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    pos = 0
    for index in range(count):
        if pos + _ENTRY.size > len(table):
            raise _Short(index)
        (_l1_off, _l1_size, id_size, name_size, date_sec, date_nsec, vm_clock_nsec,
         vm_state_size, extra_size) = _ENTRY.unpack_from(table, pos)
        pos += _ENTRY.size
        if extra_size > MAX_EXTRA_DATA:
            raise Unsupported(f"snapshot extra data of {extra_size} bytes")
        if version == 3 and extra_size < 16:
            raise Unsupported("v3 snapshot entry without vm_state_size_large/disk_size")
        end = pos + extra_size + id_size + name_size
        if end > len(table):
            raise _Short(index)
        extra = table[pos:pos + extra_size]
        pos += extra_size
        if extra_size >= 8:
            vm_state_size = _U64.unpack_from(extra, 0)[0]  # the 32-bit field is ignored
        icount = _U64.unpack_from(extra, 16)[0] if extra_size >= 24 else _NO_ICOUNT
        try:
            snap_id = table[pos:pos + id_size].decode("utf-8")
            name = table[pos + id_size:end].decode("utf-8")
        except UnicodeDecodeError as err:
            raise Unsupported(f"snapshot entry {index}: {err}") from err
        if date_nsec >= 1_000_000_000:
            raise Unsupported(f"snapshot entry {index}: date_nsec {date_nsec}")
        pos = (end + 7) & ~7
        info: dict[str, Any] = {
            "id": snap_id, "name": name, "date-sec": date_sec, "date-nsec": date_nsec,
            "vm-clock-sec": vm_clock_nsec // 1_000_000_000,
            "vm-clock-nsec": vm_clock_nsec % 1_000_000_000,
            "vm-state-size": vm_state_size,
        }
        if icount != _NO_ICOUNT:
            info["icount"] = icount
        result.append(info)
    return result
