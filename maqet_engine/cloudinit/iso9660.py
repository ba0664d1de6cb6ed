"""A minimal, deterministic ISO 9660 writer: a few files in the root directory.

What a NoCloud seed needs and nothing more (ECMA-119 plus two extensions):

- the primary tree with ISO level-1 names (``USER_DAT.;1``), readable everywhere;
- **Rock Ridge** (RRIP 1.10: ``SP``, ``ER``, ``PX``, ``NM``) so Linux's isofs, which
  cloud-init mounts, sees ``user-data`` and ``meta-data`` with their real names;
- **Joliet** (UCS-2 level 3) so readers without Rock Ridge (Windows, cloudbase-init)
  see them too.

The output is a pure function of the arguments: every timestamp is
``constants.CLOUD_INIT_SEED_TIME`` (UTC, never the local zone), directory records are
sorted, nothing depends on the host. Layout, in 2048-byte sectors::

    0-15  system area (zeros)        21  L path table (Joliet)
    16    primary volume descriptor  22  M path table (Joliet)
    17    Joliet volume descriptor   23  ISO root directory (with Rock Ridge entries)
    18    set terminator             24  Joliet root directory
    19    L path table (ISO)         25  Rock Ridge continuation area (the ER entry)
    20    M path table (ISO)         26+ file data, one extent each, then zero sectors
                                         up to MIN_SECTORS
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from maqet_engine import constants as C

__all__ = ["MAX_FILES", "MIN_SECTORS", "SECTOR", "build_iso"]

SECTOR = 2048
MAX_FILES = 32  # all records must fit the one sector of each root directory
_MAX_FILE_BYTES = 0xFFFF_FFFF  # the data length field is 32 bits
_MAX_NAME = 64  # Joliet's limit in characters; Rock Ridge NM names are kept as short
# libisoburn (xorriso) sees no session in a volume of 32 sectors (64 KiB) or fewer: pad the
# volume with zero sectors up to this size. 128 KiB costs nothing on a virtio disk.
MIN_SECTORS = 64

_PVD, _SVD, _TERM, _L_ISO, _M_ISO, _L_JOL, _M_JOL, _ROOT_ISO, _ROOT_JOL, _CONT = range(16, 26)
_FIRST_DATA = 26

_DIR_FLAG = 0x02
_FILE_MODE = 0o100444  # Rock Ridge PX: a read-only regular file
_DIR_MODE = 0o040555
_JOLIET_UCS2_LEVEL3 = b"%/E"
_ER_ID = b"RRIP_1991A"
_ER_DES = b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS"
_ER_SRC = (b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER "
           b"IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.")
_APPLICATION = "MAQET CLOUD-INIT SEED"
_D_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def build_iso(files: Sequence[tuple[str, bytes]], *, volume_id: str) -> bytes:
    """The bytes of an ISO 9660 image holding ``files`` (name, content) in its root.

    :param files: at most :data:`MAX_FILES` distinct names of letters, digits, ``._-``
        (not starting with ``.``), each at most 64 characters.
    :param volume_id: the label, at most 16 characters of the same set (``cidata``).
    :raise ValueError: a name, the label or a size the format cannot hold.
    """
    _check_input(files, volume_id)
    iso_names = _level1_names([name for name, _ in files])
    extents: dict[str, tuple[int, int]] = {}  # name -> (first sector, length)
    sector = _FIRST_DATA
    for name, data in files:
        extents[name] = (sector if data else 0, len(data))
        sector += _sectors(len(data))
    total = max(sector, MIN_SECTORS)

    iso_root = [(iso_names[name], name, *extents[name]) for name, _ in files]
    iso_root.sort(key=lambda entry: _iso_sort_key(entry[0]))
    jol_root = [(_joliet_name(name), *extents[name]) for name, _ in files]
    jol_root.sort(key=lambda entry: entry[0])

    er = _er()
    image = bytearray(total * SECTOR)
    _put(image, _PVD, _volume_descriptor(1, volume_id, total, _L_ISO, _M_ISO, _ROOT_ISO))
    _put(image, _SVD, _volume_descriptor(2, volume_id, total, _L_JOL, _M_JOL, _ROOT_JOL))
    _put(image, _TERM, bytes([255]) + b"CD001\x01")
    for l_sector, m_sector, root in ((_L_ISO, _M_ISO, _ROOT_ISO), (_L_JOL, _M_JOL, _ROOT_JOL)):
        _put(image, l_sector, _path_table(root, "<"))
        _put(image, m_sector, _path_table(root, ">"))

    root_su = (_sp() + _px(_DIR_MODE, 2)
               + _su("CE", _both32(_CONT) + _both32(0) + _both32(len(er))))
    iso_dir = [_record(b"\x00", _ROOT_ISO, SECTOR, directory=True, su=root_su),
               _record(b"\x01", _ROOT_ISO, SECTOR, directory=True, su=_px(_DIR_MODE, 2))]
    for iso_name, name, start, length in iso_root:
        su = _px(_FILE_MODE, 1) + _su("NM", b"\x00" + name.encode("ascii"))
        iso_dir.append(_record(iso_name.encode("ascii"), start, length, su=su))
    jol_dir = [_record(b"\x00", _ROOT_JOL, SECTOR, directory=True),
               _record(b"\x01", _ROOT_JOL, SECTOR, directory=True)]
    for jol_name, start, length in jol_root:
        jol_dir.append(_record(jol_name, start, length))
    _put(image, _ROOT_ISO, _one_sector(iso_dir))
    _put(image, _ROOT_JOL, _one_sector(jol_dir))
    _put(image, _CONT, er)
    for name, data in files:
        start, _length = extents[name]
        if data:
            image[start * SECTOR:start * SECTOR + len(data)] = data
    return bytes(image)


# --- input ---------------------------------------------------------------------

def _check_input(files: Sequence[tuple[str, bytes]], volume_id: str) -> None:
    if not files or len(files) > MAX_FILES:
        raise ValueError(f"an image holds 1 to {MAX_FILES} files, not {len(files)}")
    names = [name for name, _ in files]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate file names in {names}")
    for name, data in files:
        if (not name or len(name) > _MAX_NAME or name.startswith(".")
                or not set(name) <= _NAME_CHARS):
            raise ValueError(f"file name {name!r} is not 1-{_MAX_NAME} of [A-Za-z0-9._-]")
        if len(data) > _MAX_FILE_BYTES:
            raise ValueError(f"{name!r} is {len(data)} bytes; ISO 9660 holds 4 GiB - 1")
    if not volume_id or len(volume_id) > 16 or not set(volume_id) <= _NAME_CHARS:
        raise ValueError(f"volume id {volume_id!r} is not 1-16 of [A-Za-z0-9._-]")


def _level1_names(names: Sequence[str]) -> dict[str, str]:
    """ISO level-1 identifiers (8.3 d-characters plus ``;1``), made unique with a counter."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        stem, _, ext = name.upper().rpartition(".") if "." in name else (name.upper(), "", "")
        stem = "".join(c if c in _D_CHARS else "_" for c in stem)[:8] or "_"
        ext = "".join(c if c in _D_CHARS else "_" for c in ext)[:3]
        candidate, counter = stem, 0
        while f"{candidate}.{ext}" in taken:
            counter += 1
            suffix = str(counter)
            candidate = stem[: 8 - len(suffix)] + suffix
        taken.add(f"{candidate}.{ext}")
        out[name] = f"{candidate}.{ext};1"
    return out


def _iso_sort_key(identifier: str) -> tuple[str, str]:
    """ECMA-119 9.3: by name, then extension, each padded with spaces."""
    stem, _, ext = identifier.partition(";")[0].partition(".")
    return stem.ljust(8), ext.ljust(3)


def _joliet_name(name: str) -> bytes:
    """UCS-2 big-endian, without the ``;1`` version (as genisoimage and xorriso write it)."""
    return name.encode("utf-16-be")


# --- records -------------------------------------------------------------------

def _both16(value: int) -> bytes:
    return struct.pack("<H", value) + struct.pack(">H", value)


def _both32(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def _sectors(length: int) -> int:
    return (length + SECTOR - 1) // SECTOR


def _put(image: bytearray, sector: int, data: bytes) -> None:
    if len(data) > SECTOR:  # pragma: no cover - guarded by MAX_FILES and fixed sizes
        raise AssertionError(f"{len(data)} bytes do not fit sector {sector}")
    image[sector * SECTOR:sector * SECTOR + len(data)] = data


def _record_date() -> bytes:
    """A 7-byte directory record date (ECMA-119 9.1.5), UTC."""
    year, month, day, hour, minute, second = C.CLOUD_INIT_SEED_TIME
    return bytes([year - 1900, month, day, hour, minute, second, 0])


def _volume_date() -> bytes:
    """A 17-byte volume descriptor date (ECMA-119 8.4.26.1), UTC."""
    year, month, day, hour, minute, second = C.CLOUD_INIT_SEED_TIME
    text = f"{year:04d}{month:02d}{day:02d}{hour:02d}{minute:02d}{second:02d}00"
    return text.encode("ascii") + b"\x00"  # hundredths, then the offset from UTC


_NO_DATE = b"0" * 16 + b"\x00"  # "not specified"


def _record(name: bytes, extent: int, length: int, *, directory: bool = False,
            su: bytes = b"") -> bytes:
    """A directory record (ECMA-119 9.1) with an optional System Use area (SUSP)."""
    pad = b"\x00" if len(name) % 2 == 0 else b""
    if len(su) % 2:
        su += b"\x00"  # keep the record length even; SUSP readers stop at < 4 bytes
    size = 33 + len(name) + len(pad) + len(su)
    if size > 255:  # pragma: no cover - names are at most 64 characters
        raise AssertionError(f"directory record of {size} bytes")
    return (bytes([size, 0]) + _both32(extent) + _both32(length) + _record_date()
            + bytes([_DIR_FLAG if directory else 0, 0, 0]) + _both16(1)
            + bytes([len(name)]) + name + pad + su)


def _one_sector(records: Sequence[bytes]) -> bytes:
    data = b"".join(records)
    if len(data) > SECTOR:
        raise ValueError("the file names do not fit one directory sector; use fewer files")
    return data


def _path_table(root_sector: int, endian: str) -> bytes:
    """The path table of a tree that has only its root (ECMA-119 9.4)."""
    return bytes([1, 0]) + struct.pack(f"{endian}IH", root_sector, 1) + b"\x00\x00"


def _text(value: str, size: int, joliet: bool) -> bytes:
    """A space-padded identifier field: ASCII, or UCS-2 big-endian for Joliet."""
    if joliet:
        encoded = value.encode("utf-16-be")[:size]
        return encoded + b"\x00 " * ((size - len(encoded)) // 2) + b"\x00" * (size % 2)
    return value.encode("ascii").ljust(size, b" ")[:size]


def _volume_descriptor(kind: int, volume_id: str, total: int, l_table: int, m_table: int,
                       root: int) -> bytes:
    """The primary (1) or Joliet supplementary (2) volume descriptor (ECMA-119 8.4/8.5)."""
    joliet = kind == 2
    root_record = _record(b"\x00", root, SECTOR, directory=True)
    return b"".join((
        bytes([kind]), b"CD001", b"\x01", b"\x00",
        _text("", 32, joliet),                     # system identifier
        _text(volume_id, 32, joliet),              # volume identifier (the label)
        bytes(8),
        _both32(total),                            # volume space size
        _JOLIET_UCS2_LEVEL3.ljust(32, b"\x00") if joliet else bytes(32),
        _both16(1), _both16(1), _both16(SECTOR),   # set size, sequence number, block size
        _both32(10),                               # path table size: one 10-byte entry
        struct.pack("<I", l_table), bytes(4), struct.pack(">I", m_table), bytes(4),
        root_record,
        _text("", 128, joliet),                    # volume set
        _text("", 128, joliet),                    # publisher
        _text("", 128, joliet),                    # data preparer
        _text(_APPLICATION, 128, joliet),          # application
        _text("", 37, joliet), _text("", 37, joliet), _text("", 37, joliet),
        _volume_date(), _volume_date(), _NO_DATE, _NO_DATE,
        b"\x01", b"\x00",                          # file structure version, reserved
    ))


# --- Rock Ridge / SUSP entries ----------------------------------------------------

def _su(signature: str, body: bytes) -> bytes:
    return signature.encode("ascii") + bytes([4 + len(body), 1]) + body


def _sp() -> bytes:
    """SUSP indicator in the root's "." record: magic BE EF, skip 0."""
    return _su("SP", b"\xbe\xef\x00")


def _px(mode: int, links: int) -> bytes:
    """POSIX attributes (RRIP 1.10 form, 36 bytes): mode, links, uid 0, gid 0."""
    return _su("PX", _both32(mode) + _both32(links) + _both32(0) + _both32(0))


def _er() -> bytes:
    """The extension reference that declares Rock Ridge (lives in the continuation area)."""
    body = bytes([len(_ER_ID), len(_ER_DES), len(_ER_SRC), 1]) + _ER_ID + _ER_DES + _ER_SRC
    return _su("ER", body)
