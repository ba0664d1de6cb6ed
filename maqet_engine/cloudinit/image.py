"""The seed as an ISO 9660 image: written, and read back, with pycdlib.

pycdlib is imported inside the two functions, so only writing or checking a seed pays
for it (it is the largest import of the package), never a command that merely imports
:mod:`maqet_engine.cloudinit`.

The image has the volume identifier ``cidata`` (how cloud-init's NoCloud finds it) and
three views of the same files:

- the primary ISO 9660 tree at interchange level 3: ``USER_DATA.;1``, ``META_DATA.;1``,
  ``NETWORK_CONFIG.;1`` are d-characters but longer than level 1's 8.3 names (levels 2
  and 3 share the 30-character rule; pycdlib itself reads such names as level 3);
- Rock Ridge 1.09, through which Linux's isofs, and so cloud-init, sees ``user-data``,
  ``meta-data`` and ``network-config`` (mode 0444);
- Joliet (UCS-2 level 3): the same names for readers without Rock Ridge.

pycdlib stamps the current (local) time into the descriptors and records, so two images
of one seed differ in bytes. Nothing relies on the bytes: whether an image already holds
a seed is decided by :func:`holds`, which reads the files back.

The image is padded with zeros to at least :data:`MIN_IMAGE_BYTES`, as ``genisoimage``
pads its images (150 sectors by default): busybox's ``findfs``/``blkid`` (the volume_id
code an initramfs finds ``LABEL=cidata`` with) read 68 KiB from the start of a device
before probing for iso9660 and give up on anything shorter, and a bare seed is ~66 KiB.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from pycdlib import PyCdlib

__all__ = ["build_image", "holds"]

_INTERCHANGE_LEVEL = 3
_ROCK_RIDGE = "1.09"
_JOLIET = 3
_APPLICATION = "MAQET CLOUD-INIT SEED"
MIN_IMAGE_BYTES = 384 * 1024  # what genisoimage makes of a seed (300 KiB padding included)


def build_image(files: Sequence[tuple[str, bytes]], *, label: str) -> bytes:
    """The bytes of an ISO 9660 image labelled ``label`` with ``files`` in its root.

    :param files: ``(name, content)``; names of lower-case letters, digits and ``-``
        (the seed's ``user-data``, ``meta-data``, ``network-config``).
    """
    import pycdlib  # deferred: see the module docstring

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=_INTERCHANGE_LEVEL, vol_ident=label,
            app_ident_str=_APPLICATION, rock_ridge=_ROCK_RIDGE, joliet=_JOLIET)
    try:
        for name, data in files:
            iso.add_fp(io.BytesIO(data), len(data), iso_path=_iso_path(name), rr_name=name,
                       joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    data = out.getvalue()
    return data + bytes(max(MIN_IMAGE_BYTES - len(data), 0))


def holds(image: BinaryIO, files: Sequence[tuple[str, bytes]], *, label: str) -> bool:
    """Whether ``image`` (an open file) is an ISO labelled ``label`` with Rock Ridge and
    Joliet whose root holds exactly ``files``, byte for byte, under their Rock Ridge
    names: the seed as cloud-init would read it. Anything else, including a file that is
    no ISO image at all or a damaged one, is False.
    """
    import pycdlib  # deferred: see the module docstring

    iso = pycdlib.PyCdlib()
    try:
        iso.open_fp(image)
    except Exception:
        # Not a readable ISO image. pycdlib raises its own exception for what it
        # recognizes as malformed, but struct, Key, Value and Unicode errors escape it on
        # damaged input: whatever it raises, the file does not hold the seed.
        return False
    try:
        return _same(iso, dict(files), label)
    except Exception:  # as above: a damaged directory record or Rock Ridge entry
        return False
    finally:
        iso.close()


def _same(iso: PyCdlib, want: dict[str, bytes], label: str) -> bool:
    if not (iso.has_rock_ridge() and iso.has_joliet()):
        return False
    volume_id = iso.pvd.volume_identifier
    if volume_id.rstrip(b" ") != label.encode("ascii"):
        return False
    found: set[str] = set()
    for record in iso.list_children(rr_path="/"):
        if record.is_dot() or record.is_dotdot():
            continue
        name = record.rock_ridge.name().decode("utf-8")
        content = want.get(name)
        if content is None or not record.is_file() or record.get_data_length() != len(content):
            return False
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        if out.getvalue() != content:
            return False
        found.add(name)
    return found == set(want)


def _iso_path(name: str) -> str:
    """``user-data`` -> ``/USER_DATA.;1``: the primary tree's name (d-characters only)."""
    return "/" + name.upper().replace("-", "_") + ".;1"
