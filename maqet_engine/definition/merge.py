"""Combining definitions: deep merge of files and ``--set key.path=value`` overrides."""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from typing import Any

from maqet_engine.errors import ConfigError

_SCALAR_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A new mapping: ``override`` on top of ``base``. Mappings merge key by key, at
    any depth; everything else, lists included, is replaced (never concatenated)."""
    merged = deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = deepcopy(value)
    return merged


def set_path(data: dict[str, Any], key_path: str, value: Any) -> None:
    """Set ``data[k1][k2]...`` from ``"k1.k2..."`` in place.

    Missing (or null) mapping keys on the way are created as mappings; numeric
    segments index existing lists (``storage.0.size``) and must be in range.
    """
    segments = key_path.split(".")
    if any(not segment for segment in segments):
        raise ConfigError(f"--set {key_path!r}: empty key in the path",
                          hint="write keys separated by single dots, e.g. storage.0.size")
    node: dict[str, Any] | list[Any] = data
    for depth, segment in enumerate(segments):
        where = ".".join(segments[:depth]) or "the definition"
        slot: str | int = segment
        if isinstance(node, list):
            if not segment.isdigit() or int(segment) >= len(node):
                raise ConfigError(f"--set {key_path!r}: {where} has no item {segment!r}",
                                  hint=f"use an index from 0 to {len(node) - 1}" if node
                                  else f"{where} is an empty list")
            slot = int(segment)
        if depth == len(segments) - 1:
            node[slot] = value  # type: ignore[index]
            return
        child = node[slot] if isinstance(node, list) else node.get(segment)
        here = ".".join(segments[: depth + 1])
        if child is None and isinstance(node, dict):
            following = segments[depth + 1]
            if following.isdigit():
                raise ConfigError(f"--set {key_path!r}: {here} has no item {following!r}",
                                  hint=f"{here} is not set; set the whole list with "
                                  f"--set {here}=[...]")
            child = node[segment] = {}
        if not isinstance(child, dict | list):
            kind = _SCALAR_NAMES.get(type(child), "a scalar") if child is not None else "null"
            raise ConfigError(f"--set {key_path!r}: {here} is {kind}, not a mapping or list",
                              hint="set the key itself, not something inside it")
        node = child
