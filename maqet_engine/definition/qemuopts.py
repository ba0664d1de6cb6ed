"""Spelling values for QEMU's command line."""

from __future__ import annotations

import json
from typing import Any


def opt_value(value: str) -> str:
    """Escape a value inside a ``key=value,key=value`` QemuOpts string (``,`` -> ``,,``)."""
    return value.replace(",", ",,")


def json_arg(data: dict[str, Any]) -> str:
    """A JSON option argument (``-blockdev {...}``): no escaping of paths needed."""
    return json.dumps(data, separators=(",", ":"))
