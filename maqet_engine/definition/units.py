"""Sizes: ``512M``, ``2GiB``, ``1.5g``, ``4096`` -> whole bytes, and back for display.

Units are binary (K = 1024), as in QEMU and qemu-img, whatever the spelling: ``M``,
``MB`` and ``MiB`` are the same. A bare number is multiplied by the caller's unit
(MiB for memory, bytes for disks). Only ASCII digits and spaces count: ``１G`` (a
fullwidth digit, which Python's ``\\d`` and ``Decimal`` accept) is not a size.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)[ \t]*(?P<unit>[kmgt]?)"
                      r"(?P<suffix>ib|b)?", re.IGNORECASE | re.ASCII)
_BLANKS = " \t"


class SizeError(ValueError):
    """The value is not a size; the message says why (without the key path)."""


class SizeTooLarge(SizeError):
    """The value is a size, larger than the caller's maximum."""


def parse_size(value: object, *, bare_unit: int, maximum: int | None = None) -> int:
    """Return ``value`` in whole bytes.

    :param value: an int, a float or a string such as ``"512M"``; bools are refused.
    :param bare_unit: bytes per unit of a number given without a unit.
    :param maximum: largest size allowed, in bytes (compared before any conversion, so
        a number of any length costs nothing).
    :raise SizeTooLarge: more than ``maximum``.
    :raise SizeError: not a size, negative, or not a whole number of bytes.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SizeError("is not a size")
    if isinstance(value, int):  # never through str(): it refuses 4,300+ digit numbers
        if value < 0:
            raise SizeError("is not a size")
        return _at_most(value * bare_unit, maximum)
    text = value.strip(_BLANKS) if isinstance(value, str) else repr(value)
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise SizeError("is not a size")
    unit = match["unit"].lower()
    suffix = (match["suffix"] or "").lower()
    if not unit and suffix == "ib":
        raise SizeError("is not a size")
    multiplier = _UNITS[unit] if unit or suffix else bare_unit
    try:
        with localcontext() as exact_context:  # room for every digit: no rounding
            exact_context.prec = len(match["num"]) + len(str(multiplier))
            exact = Decimal(match["num"]) * multiplier
    except InvalidOperation as err:  # pragma: no cover - the regex admits only decimals
        raise SizeError("is not a size") from err
    if maximum is not None and exact > maximum:
        raise SizeTooLarge("is too large")
    if exact != exact.to_integral_value():
        raise SizeError("is not a whole number of bytes")
    return int(exact)


def _at_most(n_bytes: int, maximum: int | None) -> int:
    if maximum is not None and n_bytes > maximum:
        raise SizeTooLarge("is too large")
    return n_bytes


def format_size(n_bytes: int) -> str:
    """Shortest exact spelling: ``536870912`` -> ``512M``, ``1000`` -> ``1000B``."""
    for unit in ("T", "G", "M", "K"):
        mult = _UNITS[unit.lower()]
        if n_bytes and n_bytes % mult == 0:
            return f"{n_bytes // mult}{unit}"
    return f"{n_bytes}B"
