"""An inline definition from Python (the Ansible modules' ``definition:`` mapping goes
through ``engine.load_definition(ctx, definition=...)``) may hold any Python value. What
JSON cannot hold is refused with its key path and what to write instead; numbers of any
size and self-referencing or deep mappings do not crash the checker; nothing is written.
"""

from __future__ import annotations

import datetime
import decimal
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from maqet_engine import constants as C
from maqet_engine import engine
from maqet_engine.errors import ConfigError

DIGITS_5000 = 10 ** 4999  # str() of it raises ValueError (the 4,300-digit limit)


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    top = node
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return top


def _cycle() -> dict[str, Any]:
    loop: dict[str, Any] = {"name": "d"}
    loop["again"] = loop
    return loop


CASES = [
    ("set", {"tags": {"a", "b"}}, "tags",
     "tags: a Python set cannot be part of a definition; use strings, numbers, booleans, "
     "null, lists and mappings only"),
    ("frozenset-in-a-list", {"arguments": ["-S", frozenset({"x"})]}, "arguments[1]",
     "a Python frozenset cannot be part of a definition"),
    ("bytes", {"machine": b"q35"}, "machine", "machine: b'q35' cannot be part of a definition"),
    ("tuple", {"tags": ("a", "b")}, "tags", "a Python tuple cannot be part of a definition"),
    ("date", {"append": datetime.date(2026, 1, 1)}, "append", "a Python date cannot be part"),
    ("decimal", {"memory": decimal.Decimal("1.5")}, "memory", "a Python Decimal cannot be part"),
    ("object-deep-inside", {"network": [{"type": "user", "forward": [
        {"host": 2222, "guest": 22, "protocol": object()}]}]},
     "network[0].forward[0].protocol", "a Python object cannot be part of a definition"),
    ("tuple-key", {("a", "b"): 1}, "", "has a key that is a Python tuple"),
    ("float-for-an-integer", {"cpu": 2.0}, "cpu", "cpu: 2.0 is not an integer; use an integer"),
    ("nan-memory", {"memory": float("nan")}, "memory", "memory: nan is not a size"),
    ("infinite-cpu", {"cpu": float("inf")}, "cpu", "cpu: inf is not an integer"),
    ("5000-digit-cpu", {"cpu": DIGITS_5000}, "cpu",
     "cpu: a number of about 5000 digits is out of range; use an integer from 1 to 1024"),
    ("5000-digit-memory", {"memory": DIGITS_5000}, "memory",
     "memory: a number of about 5000 digits is too large; use at most 4096T"),
    ("30-digit-disk", {"storage": [{"name": "d", "type": "qcow2", "size": 10 ** 29}]},
     "storage[0].size", "storage[0].size: 100000000000000000000000000000 is too large; "
     "use at most 2048T"),
    ("5000-digit-name", {"name": DIGITS_5000}, "name",
     "name: a number of about 5000 digits is not a valid VM name"),
    ("1000-deep-mapping", {"storage": _nested(1000)}, "storage",
     f"storage: is nested more than {C.MAX_DEFINITION_DEPTH} levels deep; a definition "
     "needs only a few levels"),
    ("mapping-that-holds-itself", {"storage": [_cycle()]}, "storage",
     "is nested more than"),
    ("string-with-escape", {"machine": "pc\x1b]0;owned\x07"}, "machine",
     "machine: 'pc\\x1b]0;owned\\x07' contains the control character U+001B"),
]


@pytest.mark.parametrize(("overrides", "path", "error"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_inline_definition_refuses_what_json_cannot_hold(
        overrides: dict[Any, Any], path: str, error: str, maqet_home: Path):
    ctx = engine.EngineContext.from_env()
    with pytest.raises(ConfigError) as info:
        engine.load_definition(ctx, definition={"name": "vm1", **overrides})
    message = str(info.value)
    assert error in message
    assert info.value.path == path
    assert info.value.exit_code == C.EXIT_USAGE
    assert not [c for c in message if unicodedata.category(c) == "Cc"]
    assert len(message) < 400
    assert not maqet_home.exists()


def test_inline_definition_of_plain_data_is_accepted(maqet_home: Path):
    """The checker refuses values, not shapes: what JSON holds passes (ints given as
    digit strings too, as Ansible templates them)."""
    spec = engine.load_definition(engine.EngineContext.from_env(), definition={
        "name": "vm1", "memory": 512, "cpu": "2", "tags": ["a"],
        "storage": [{"name": "d", "type": "qcow2", "size": "1G"}]})
    assert spec.data["memory"] == 512 * 1024 * 1024 and spec.data["cpu"] == 2
    assert not maqet_home.exists()
