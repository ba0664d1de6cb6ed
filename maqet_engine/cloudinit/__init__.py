"""cloud-init NoCloud seeds (the public API is assembled in a later commit)."""
