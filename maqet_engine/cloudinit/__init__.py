"""cloud-init NoCloud seeds (the public API is assembled in a later commit)."""

from __future__ import annotations

from maqet_engine.cloudinit.config import normalize
from maqet_engine.cloudinit.files import SeedImage, write_seed
from maqet_engine.cloudinit.seed import Seed, build_seed

__all__ = ["Seed", "SeedImage", "build_seed", "normalize", "write_seed"]
