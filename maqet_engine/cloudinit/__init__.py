"""cloud-init NoCloud seeds: from a definition's ``cloud_init`` section to a seed image,
and back from what cloud-init prints on the console to a known_hosts file.

Typical use (the engine wires the paths and the console text)::

    cfg = normalize(definition["cloud_init"])          # canonical, JSON-able; compare/hash it
    seed = build_seed(cfg, vm_name="web1")             # pure: three files + instance-id
    image = write_seed(seed, vm_dir / "cidata.iso")    # atomic; unchanged bytes: not rewritten
    # attach image.path as a read-only *virtio* disk (q35's CD-ROM is AHCI, which the
    # Debian cloud kernel lacks): -drive file=...,if=virtio,format=raw,readonly=on
    keys = host_keys_from_console(serial_text)         # ["ssh-ed25519 AAAA...", ...]
    write_known_hosts(path, known_hosts_lines([host_pattern("127.0.0.1", 2222)], keys))

Modules: :mod:`.config` (checks, canonical form), :mod:`.seed` (rendering,
instance-id), :mod:`.iso9660` (the image writer), :mod:`.files` (atomic writes),
:mod:`.sshkeys` (public key lines), :mod:`.console` (console parsing),
:mod:`.known_hosts` (known_hosts entries).

How the ISO 9660 image is written, and why
------------------------------------------
By :mod:`.iso9660`, a writer of about 270 lines for "a few small files in the root
directory", with Joliet and Rock Ridge. The alternatives were weighed:

- ``genisoimage``/``xorriso``/``cloud-localds`` (Debian): one more apt package every user
  must install and a subprocess per seed. Checked here: Debian 12's genisoimage stamps the
  build time into the volume descriptors even with ``SOURCE_DATE_EPOCH`` and fixed input
  mtimes, so two builds differ; xorriso is reproducible only with ``SOURCE_DATE_EPOCH``
  *and* the temporary input files' mtimes pinned.
- ``pycdlib`` (PyPI, LGPL, pure Python): no apt package and fast, but it stamps
  ``time.time()`` in local time into every directory record, volume descriptor and
  Rock Ridge entry, with no parameter to fix it. Byte-for-byte reproducible images would
  need monkeypatching its module globals (process-wide, not thread-safe, silently broken
  by any refactoring of its internals) or rewriting its private date objects.

Determinism is the requirement that decides: the seed's hash must not change unless the
config does, or an unchanged VM would look changed. A purpose-built writer is
deterministic by construction (fixed timestamps in UTC, sorted records, no host state),
needs no dependency, and renders a seed image in about 0.1 ms. The format is frozen
(ISO 9660:1988, RRIP 1.10, Joliet 1995) and the scope small; tests read the images back
with isoinfo, xorriso and blkid, and through Linux's isofs in the test guest. Rock Ridge
gives Linux (which cloud-init mounts through) the lower-case names ``user-data``,
``meta-data``, ``network-config``; Joliet gives the same names to readers without Rock Ridge.

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

from maqet_engine.cloudinit.config import normalize
from maqet_engine.cloudinit.console import (
    HostKeyFingerprint,
    fingerprints_from_console,
    host_keys_from_console,
)
from maqet_engine.cloudinit.files import SeedImage, write_seed
from maqet_engine.cloudinit.known_hosts import host_pattern, known_hosts_lines, write_known_hosts
from maqet_engine.cloudinit.seed import Seed, build_seed
from maqet_engine.cloudinit.sshkeys import fingerprint

__all__ = [
    "HostKeyFingerprint",
    "Seed",
    "SeedImage",
    "build_seed",
    "fingerprint",
    "fingerprints_from_console",
    "host_keys_from_console",
    "host_pattern",
    "known_hosts_lines",
    "normalize",
    "write_known_hosts",
    "write_seed",
]
