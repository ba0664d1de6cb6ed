"""Sizes: ``512M``, ``2GiB``, ``1.5g``, ``4096`` -> whole bytes, and back for display.

Units are binary (K = 1024), as in QEMU and qemu-img, whatever the spelling: ``M``,
``MB`` and ``MiB`` are the same. A bare number is multiplied by the caller's unit
(MiB for memory, bytes for disks).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[kmgt]?)(?P<suffix>ib|b)?",
                      re.IGNORECASE)


class SizeError(ValueError):
    """The value is not a size; the message says why (without the key path)."""


def parse_size(value: object, *, bare_unit: int) -> int:
    """Return ``value`` in whole bytes.

    :param value: an int, a float or a string such as ``"512M"``; bools are refused.
    :param bare_unit: bytes per unit of a number given without a unit.
    :raise SizeError: not a size, negative, or not a whole number of bytes.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SizeError("is not a size")
    text = str(value).strip() if not isinstance(value, float) else repr(value)
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise SizeError("is not a size")
    unit = match["unit"].lower()
    suffix = (match["suffix"] or "").lower()
    if not unit and suffix == "ib":
        raise SizeError("is not a size")
    multiplier = _UNITS[unit] if unit or suffix else bare_unit
    try:
        exact = Decimal(match["num"]) * multiplier
    except InvalidOperation as err:  # pragma: no cover - the regex admits only decimals
        raise SizeError("is not a size") from err
    if exact != exact.to_integral_value():
        raise SizeError("is not a whole number of bytes")
    return int(exact)


def format_size(n_bytes: int) -> str:
    """Shortest exact spelling: ``536870912`` -> ``512M``, ``1000`` -> ``1000B``."""
    for unit in ("T", "G", "M", "K"):
        mult = _UNITS[unit.lower()]
        if n_bytes and n_bytes % mult == 0:
            return f"{n_bytes // mult}{unit}"
    return f"{n_bytes}B"
