"""cloud-init NoCloud seeds: from a definition's ``cloud_init`` section to a seed image,
and back from what cloud-init prints on the console to a known_hosts file.

Typical use (the engine wires the paths and the console text)::

    cfg = normalize(definition["cloud_init"])          # canonical, JSON-able; compare/hash it
    seed = build_seed(cfg, vm_name="web1")             # pure: three files + instance-id
    image = write_seed(seed, vm_dir / "cidata.iso")    # atomic; same files: not rewritten
    # attach image.path as a read-only *virtio* disk (q35's CD-ROM is AHCI, which the
    # Debian cloud kernel lacks): -drive file=...,if=virtio,format=raw,readonly=on
    keys = host_keys_from_console(serial_text)         # ["ssh-ed25519 AAAA...", ...]
    write_known_hosts(path, known_hosts_lines([host_pattern("127.0.0.1", 2222)], keys))

Modules: :mod:`.config` (checks, canonical form), :mod:`.seed` (rendering,
instance-id), :mod:`.image` (the ISO image, through pycdlib), :mod:`.files` (atomic
writes), :mod:`.sshkeys` (public key lines), :mod:`.console` (console parsing),
:mod:`.known_hosts` (known_hosts entries).

Names are resolved lazily (PEP 562): importing the package, or only its console and
known_hosts parts (as the per-VM runner does), loads neither :mod:`.config` (which
checks definitions with the definition package) nor hashlib (OpenSSL's libcrypto, 4 MiB
per runner); each part is imported when one of its names is first used.

The seed image, and when it is "unchanged"
------------------------------------------
The ISO 9660 image is written by ``pycdlib`` (PyPI, LGPL, maintained, pure Python):
an ISO writer is exactly what a maintained library beats writing (the founders' rule), and
pycdlib needs no apt package (genisoimage, xorriso or cloud-localds would be one more
for every user, and a subprocess per seed) and runs in the venv the Ansible modules use on
a remote hypervisor. The image is labelled ``cidata`` and has Rock Ridge 1.09 (Linux's
isofs, which cloud-init mounts, sees ``user-data``, ``meta-data``, ``network-config``)
and Joliet (the same names without Rock Ridge); see :mod:`.image`. pycdlib is imported
only when a seed image is written or read, never by importing this package.

Nothing depends on the image's *bytes*, which carry pycdlib's build time:

- the engine decides whether a VM changed from the mapping :func:`normalize` returns
  (its hash is part of the VM's spec), never from the image;
- the instance-id comes from the seed's files (:mod:`.seed`), so the same config gives
  the same id, and any change a new one, whatever the image bytes;
- :func:`write_seed` leaves an existing image alone (same inode, same mtime) when reading
  it back with pycdlib finds the ``cidata`` label, Rock Ridge and Joliet, and exactly the
  seed's files, byte for byte, under their Rock Ridge names: the seed as cloud-init
  would read it. Otherwise (another seed, a damaged file, not an ISO at all) the image
  is replaced atomically. The check needs no second file to keep in step with the
  image, and an image of the same files written by another tool (genisoimage, an older
  maqet) is kept too.

Where shortcuts and explicit data meet
--------------------------------------
- ``hostname`` sets meta-data ``local-hostname`` and, for a mapping ``user_data``,
  ``hostname`` in #cloud-config.
- ``users`` becomes #cloud-config ``users``; ``sudo: true`` grants
  ``ALL=(ALL) NOPASSWD:ALL``. A user named ``root`` adds ``disable_root: false``.
  A ``users`` list replaces the image's default user in cloud-init unless it names
  ``default``: maqet adds ``default`` first when top-level ``ssh_authorized_keys`` (the
  default user's keys) are given too.
- Shortcuts and ``user_data``/``meta_data`` may not set the same cloud-init key
  (``hostname``, ``users``, ``ssh_authorized_keys``, ``disable_root``,
  ``local-hostname``): that is an error naming both places, never a silent winner.
- ``user_data`` as text is used verbatim (a script, a MIME multipart document, or
  #cloud-config text); maqet cannot merge into it, so ``users`` and
  ``ssh_authorized_keys`` are then errors. ``hostname`` still works: it only needs
  meta-data, which cloud-init uses when user-data has no ``hostname``.
- ``meta_data.instance-id`` is refused: maqet derives it from the content.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_PACKAGE = "maqet_engine.cloudinit"
_EXPORTS = {
    "normalize": "config",
    "HostKeyFingerprint": "console", "fingerprints_from_console": "console",
    "host_keys_from_console": "console",
    "SeedImage": "files", "write_seed": "files",
    "distinct_keys": "known_hosts", "host_key_alias": "known_hosts",
    "host_pattern": "known_hosts", "known_hosts_entries": "known_hosts",
    "known_hosts_lines": "known_hosts",
    "read_known_hosts": "known_hosts", "write_known_hosts": "known_hosts",
    "Seed": "seed", "build_seed": "seed",
    "fingerprint": "sshkeys",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{_PACKAGE}.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
