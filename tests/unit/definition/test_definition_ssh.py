"""The ``ssh`` section: how front ends reach the guest (user, key file, guest port).
Stored only when set, so definitions without it keep their hash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from maqet_engine.definition import Spec
from maqet_engine.errors import ConfigError

Parse = Callable[..., Spec]


def test_unset_is_not_stored(parse: Parse):
    spec = parse({"name": "vm"})
    assert "ssh" not in spec.data


def test_defaults_and_key_kept_as_written(parse: Parse):
    spec = parse({"name": "vm", "ssh": {"private_key": "~/.ssh/id_ed25519"}})
    assert spec.data["ssh"] == {"user": None, "private_key": "~/.ssh/id_ed25519", "port": 22}
    assert parse({"name": "vm", "ssh": {}}).data["ssh"] == {
        "user": None, "private_key": None, "port": 22}
    full = parse({"name": "vm", "ssh": {"user": "admin", "port": "2200",
                                        "private_key": "keys/id"}})
    assert full.data["ssh"] == {"user": "admin", "private_key": "keys/id", "port": 2200}
    assert full.hash != spec.hash


@pytest.mark.parametrize(("section", "path", "text"), [
    ({"user": "Bad User"}, "ssh.user", "is not a valid user name"),
    ({"port": 0}, "ssh.port", "is out of range"),
    ({"port": "auto"}, "ssh.port", "is not an integer"),
    ({"private_key": ""}, "ssh.private_key", "is empty"),
    ({"key": "x"}, "ssh.key", "unknown key"),
    ("root", "ssh", "is not a mapping"),
])
def test_refused(parse: Parse, section: Any, path: str, text: str):
    with pytest.raises(ConfigError) as caught:
        parse({"name": "vm", "ssh": section})
    assert caught.value.path == path
    assert text in str(caught.value)
