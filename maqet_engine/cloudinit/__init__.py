"""cloud-init NoCloud seeds (the public API is assembled in a later commit)."""

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
