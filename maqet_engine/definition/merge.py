"""Combining definitions: deep merge of files and ``--set key.path=value`` overrides."""

from __future__ import annotations

import re
from collections.abc import Mapping
from copy import deepcopy
from typing import Any

from maqet_engine.definition.check import check_data, show
from maqet_engine.errors import ConfigError

_SCALAR_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
_INDEX_RE = re.compile(r"[0-9]{1,9}", re.ASCII)  # '²' and '１' are digits to isdigit()


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A new mapping: ``override`` on top of ``base``. Mappings merge key by key, at
    any depth; everything else, lists included, is replaced (never concatenated).

    :raise ConfigError: ``override`` holds something no definition can (see
        :func:`~maqet_engine.definition.check.check_data`); checked before it is copied.
    """
    check_data(override)
    return _merge(base, override)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = deepcopy(value)
    return merged


def set_path(data: dict[str, Any], key_path: str, value: Any) -> None:
    """Set ``data[k1][k2]...`` from ``"k1.k2..."`` in place.

    Missing (or null) mapping keys on the way are created as mappings; numeric
    segments index existing lists (``storage.0.size``) and must be in range.
    """
    segments = key_path.split(".")
    shown = f"--set {show(key_path)}"
    if any(not segment for segment in segments):
        raise ConfigError(f"{shown}: empty key in the path",
                          hint="write keys separated by single dots, e.g. storage.0.size")
    node: dict[str, Any] | list[Any] = data
    for depth, segment in enumerate(segments):
        where = show(".".join(segments[:depth]), quoted=False) or "the definition"
        slot: str | int = segment
        if isinstance(node, list):
            if not _INDEX_RE.fullmatch(segment) or int(segment) >= len(node):
                raise ConfigError(f"{shown}: {where} has no item {show(segment)}",
                                  hint=f"use an index from 0 to {len(node) - 1}" if node
                                  else f"{where} is an empty list")
            slot = int(segment)
        if depth == len(segments) - 1:
            node[slot] = value  # type: ignore[index]
            return
        child = node[slot] if isinstance(node, list) else node.get(segment)
        here = show(".".join(segments[: depth + 1]), quoted=False)
        if child is None and isinstance(node, dict):
            following = segments[depth + 1]
            if _INDEX_RE.fullmatch(following):
                raise ConfigError(f"{shown}: {here} has no item {show(following)}",
                                  hint=f"{here} is not set; set the whole list with "
                                  f"--set {here}=[...]")
            child = node[segment] = {}
        if not isinstance(child, dict | list):
            kind = _SCALAR_NAMES.get(type(child), "a scalar") if child is not None else "null"
            raise ConfigError(f"{shown}: {here} is {kind}, not a mapping or list",
                              hint="set the key itself, not something inside it")
        node = child
