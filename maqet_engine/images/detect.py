"""What an image file is, from its content only (never its name): qcow2 or raw.

The rule for a base image in the cache, which every VM's overlay will read:

- **qcow2**: magic ``QFI\\xfb``, version 2 or 3; its virtual size from the header. Refused:
  a backing file (a base must be self-contained: the backing path would point outside
  the cache), encryption, and v3 incompatible features other than compression type and
  extended L2 (dirty, corrupt, an external data file, or one unknown here).
- **raw**: anything else that is plausibly a disk: not empty, a whole number of 512-byte
  sectors, and not another known format. Refused: LUKS (encrypted), VMDK, VDI, VHD(X),
  QED (convert them), compressed files and archives (decompress them), and text: a
  first 4 KiB without a NUL byte that reads as UTF-8 is an HTML error page or a
  download page, never a disk (boot sectors, partition tables and file systems all
  have zeros there).

The header is read by :func:`maqet_engine.storage.qcow2.read_header` (one reader of
the qcow2 format in the code base).
"""

from __future__ import annotations

import os
import stat

from maqet_engine import constants as C
from maqet_engine.errors import ConfigError
from maqet_engine.frozen import Frozen

_CONVERT = "convert it with: qemu-img convert -O qcow2 <image> <image>.qcow2"
_DECOMPRESS = "use the uncompressed image (maqet does not decompress)"
# (offset, magic, what it is, hint)
_REFUSED: tuple[tuple[int, bytes, str, str], ...] = (
    (0, b"LUKS\xba\xbe", "a LUKS-encrypted image", "maqet cannot use an encrypted base image"),
    (0, b"KDMV", "a VMDK image", _CONVERT),
    (64, b"\x7f\x10\xda\xbe", "a VDI image", _CONVERT),
    (0, b"vhdxfile", "a VHDX image", _CONVERT),
    (0, b"conectix", "a VHD image", _CONVERT),
    (0, b"QED\x00", "a QED image", _CONVERT),
    (0, b"\xfd7zXZ\x00", "xz-compressed", _DECOMPRESS),
    (0, b"\x1f\x8b", "gzip-compressed", _DECOMPRESS),
    (0, b"\x28\xb5\x2f\xfd", "zstd-compressed", _DECOMPRESS),
    (0, b"BZh", "bzip2-compressed", _DECOMPRESS),
    (0, b"PK\x03\x04", "a zip archive", _DECOMPRESS),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-zip archive", _DECOMPRESS),
    (257, b"ustar", "a tar archive (an OVA?)", "extract the disk image from it"),
)
_HTML_STARTS = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<!--")


class DiskFormat(Frozen):
    """``format`` is ``"qcow2"`` or ``"raw"``; ``virtual_size`` is the disk's size in
    bytes as the guest sees it (for raw, the file size)."""

    __slots__ = ("format", "virtual_size")
    format: str
    virtual_size: int


def detect_format(path: os.PathLike[str] | str, *, what: str | None = None) -> DiskFormat:
    """Tell a usable base image's format from its content (see the module docstring).

    :param what: how messages name the image (default: its path).
    :raise ConfigError: the file is not a usable disk image; the message says what it
        is and the hint what to do.
    :raise OSError: it cannot be opened or read (symlinks are not followed).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return detect_fd(fd, what=what or str(path))
    finally:
        os.close(fd)


def detect_fd(fd: int, *, what: str) -> DiskFormat:
    """:func:`detect_format` of an open file."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what}: not a regular file")
    size = info.st_size
    if size == 0:
        raise ConfigError(f"{what}: the file is empty", hint="check the URL or path")
    head = os.pread(fd, min(size, C.IMAGE_SNIFF_BYTES), 0)
    from maqet_engine.storage import qcow2

    if head.startswith(qcow2.MAGIC):
        return _qcow2(fd, what)
    for offset, magic, kind, hint in _REFUSED:
        if head[offset:offset + len(magic)] == magic:
            raise ConfigError(f"{what}: is {kind}, not a qcow2 or raw disk image", hint=hint)
    if _is_text(head):
        start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        if start.startswith(_HTML_STARTS) or b"<html" in head[:1024].lower():
            raise ConfigError(f"{what}: is an HTML page, not a disk image",
                              hint="the URL points at a web page (a download or error page): "
                              "give the direct link to the image file")
        raise ConfigError(f"{what}: is a text file, not a disk image",
                          hint="check the URL or path")
    if size % C.IMAGE_SECTOR:
        raise ConfigError(f"{what}: is {size} bytes, not a whole number of "
                          f"{C.IMAGE_SECTOR}-byte sectors: not a raw disk image",
                          hint="check the URL or path")
    return DiskFormat(format="raw", virtual_size=size)


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        # a sniffed prefix may end inside a character
        return err.reason == "unexpected end of data" and len(head) == C.IMAGE_SNIFF_BYTES
    return True


def _qcow2(fd: int, what: str) -> DiskFormat:
    from maqet_engine.storage import qcow2

    hint = "check it with qemu-img check, or " + _CONVERT
    try:
        header = qcow2.read_header(fd)
        if header.crypt_method != 0:
            raise ConfigError(f"{what}: is an encrypted qcow2 image",
                              hint="maqet cannot use an encrypted base image")
        if header.backing_offset:
            raise ConfigError(f"{what}: is a qcow2 overlay on a backing file "
                              f"({header.backing_name(fd)}); a base image must be "
                              "self-contained", hint="flatten it with: qemu-img convert -O "
                              "qcow2 <overlay> <image>.qcow2")
        if header.unknown_incompatible:
            raise ConfigError(f"{what}: is a qcow2 image with incompatible features "
                              f"{header.incompatible:#x} (dirty, corrupt, or an external data "
                              "file)", hint=hint)
    except qcow2.Unsupported as err:
        if str(err).startswith("qcow2 version"):
            raise ConfigError(f"{what}: is a {err} image, which maqet cannot use as a base",
                              hint=_CONVERT) from None
        raise ConfigError(f"{what}: is a damaged qcow2 image ({err})", hint=hint) from None
    if header.virtual_size == 0:
        raise ConfigError(f"{what}: is a qcow2 image of virtual size 0", hint="check the image")
    return DiskFormat(format="qcow2", virtual_size=header.virtual_size)
