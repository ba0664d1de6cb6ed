"""The normalized VM definition: :class:`Spec`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from maqet_engine import constants as C


@dataclass(frozen=True)
class Spec:
    """A parsed, validated, normalized definition (build it with ``parse_spec``).

    ``data`` is JSON-able and has every top-level key (``None`` when unset) except
    ``cloud_init`` and ``agent``, present only when set (as a storage entry's ``image``
    and ``checksum``): keys added later are left out when unset, so that definitions
    stored before keep their hash. Sizes are bytes, paths absolute, defaults explicit, tags
    sorted. Two specs are equal, and
    have equal :attr:`hash`, exactly when their ``data`` is equal. Do not mutate it.
    """

    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def hash(self) -> str:
        """Hex digest of :meth:`to_json` (drift = the stored hash differs)."""
        return hashlib.new(C.SPEC_HASH_ALGORITHM, self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces, ASCII."""
        return json.dumps(self.data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        """Rebuild a spec stored by :meth:`to_json` (trusted input: no validation)."""
        return cls(json.loads(text))

    def __hash__(self) -> int:
        return hash(self.hash)
