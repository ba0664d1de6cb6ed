"""VM names: only VM_NAME_RE passes, since they become paths and QEMU's -name."""

from __future__ import annotations

import pytest

from maqet_engine.definition import validate_vm_name
from maqet_engine.errors import ConfigError

GOOD = ["a", "web1", "Web-1", "db_2", "a.b", "1vm", "a" * 63, "x-" * 31 + "y"]
EVIL = ["", "../x", "..", ".", ".hidden", "a/b", "/abs", "a b", " a", "a\x00", "\x00",
        "a" * 64, "-a", "_a", "a,b", "a\nb", "a\t", "é", "a:b", "a=b", "a*", "~root", "$x"]


@pytest.mark.parametrize("name", GOOD)
def test_good_names(name: str):
    assert validate_vm_name(name) == name


@pytest.mark.parametrize("name", EVIL)
def test_evil_names(name: str):
    with pytest.raises(ConfigError) as info:
        validate_vm_name(name)
    assert info.value.path == "name"
    assert "is not a valid VM name" in str(info.value)
    assert "\n" not in str(info.value).replace(repr(name), "")


@pytest.mark.parametrize("name", [None, 42, ["a"], True])
def test_non_strings(name: object):
    with pytest.raises(ConfigError, match="is not a valid VM name"):
        validate_vm_name(name)


def test_name_flag_is_validated(parse):
    with pytest.raises(ConfigError, match="'a/b' is not a valid VM name"):
        parse({"name": "a/b"})
