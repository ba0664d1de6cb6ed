"""cloud-init NoCloud seeds (the public API is assembled in a later commit)."""

from __future__ import annotations

from maqet_engine.cloudinit.config import normalize

__all__ = ["normalize"]
