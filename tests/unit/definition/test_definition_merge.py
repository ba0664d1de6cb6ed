"""Deep merge of definition files and --set key paths."""

from __future__ import annotations

from typing import Any

import pytest

from maqet_engine.definition.merge import deep_merge, set_path
from maqet_engine.errors import ConfigError


@pytest.mark.parametrize(
    ("base", "override", "expected"),
    [
        ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": {"x": 1, "y": 1}}, {"a": {"y": 2, "z": 3}}, {"a": {"x": 1, "y": 2, "z": 3}}),
        ({"a": {"b": {"c": 1, "d": 1}}}, {"a": {"b": {"d": 2}}}, {"a": {"b": {"c": 1, "d": 2}}}),
        ({"tags": ["a", "b"]}, {"tags": ["c"]}, {"tags": ["c"]}),
        ({"storage": [{"name": "a"}]}, {"storage": []}, {"storage": []}),
        ({"a": {"x": 1}}, {"a": None}, {"a": None}),
        ({"a": None}, {"a": {"x": 1}}, {"a": {"x": 1}}),
        ({"a": [1]}, {"a": {"x": 1}}, {"a": {"x": 1}}),
        ({"a": {"x": 1}}, {"a": "flat"}, {"a": "flat"}),
    ],
    ids=["add", "later-wins", "nested", "deeply-nested", "lists-replace", "empty-list-replaces",
         "null-replaces", "mapping-over-null", "mapping-over-list", "scalar-over-mapping"],
)
def test_deep_merge(base: dict[str, Any], override: dict[str, Any], expected: dict[str, Any]):
    assert deep_merge(base, override) == expected


def test_deep_merge_copies():
    base = {"a": {"x": [1]}}
    override = {"a": {"y": [2]}}
    merged = deep_merge(base, override)
    merged["a"]["x"].append(9)
    merged["a"]["y"].append(9)
    assert base == {"a": {"x": [1]}} and override == {"a": {"y": [2]}}


@pytest.mark.parametrize(
    ("data", "key", "value", "expected"),
    [
        ({}, "memory", "1G", {"memory": "1G"}),
        ({"memory": "2G"}, "memory", "1G", {"memory": "1G"}),
        ({}, "a.b.c", 1, {"a": {"b": {"c": 1}}}),
        ({"a": None}, "a.b", 1, {"a": {"b": 1}}),
        ({"storage": [{"size": "1G"}]}, "storage.0.size", "4G", {"storage": [{"size": "4G"}]}),
        ({"tags": ["a", "b"]}, "tags.1", "c", {"tags": ["a", "c"]}),
        ({"tags": ["a"]}, "tags", ["x", "y"], {"tags": ["x", "y"]}),
        ({"n": [{"f": [{"h": 1}]}]}, "n.0.f.0.h", 2, {"n": [{"f": [{"h": 2}]}]}),
        ({"machine": "q35"}, "machine", None, {"machine": None}),
    ],
)
def test_set_path(data: dict[str, Any], key: str, value: Any, expected: dict[str, Any]):
    set_path(data, key, value)
    assert data == expected


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({}, "a..b", "empty key in the path"),
        ({}, ".a", "empty key in the path"),
        ({}, "a.", "empty key in the path"),
        ({"storage": []}, "storage.0.size", "storage is an empty list"),
        ({"storage": [{}]}, "storage.1.size", "has no item '1'; use an index from 0 to 0"),
        ({"storage": [{}]}, "storage.first.size", "has no item 'first'"),
        ({"storage": [{}]}, "storage.-1", "has no item '-1'"),
        ({"memory": "1G"}, "memory.x", "'memory.x': memory is a string, not a mapping or list"),
        ({"tags": ["a"]}, "tags.0.x", ": tags.0 is a string, not a mapping or list"),
    ],
)
def test_set_path_refuses(data: dict[str, Any], key: str, message: str):
    with pytest.raises(ConfigError, match=message):
        set_path(data, key, "v")
