"""Reading definitions: files, merge order, --set, --name, YAML errors and dialect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.definition import load_definition
from maqet_engine.definition.load import parse_set
from maqet_engine.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_files_merge_in_order_lists_replace(tmp_path: Path):
    base = write(tmp_path / "base.yml", "name: a\nmemory: 1G\ntags: [x, y]\n"
                 "storage:\n  - {name: d, type: qcow2, size: 1G}\n"
                 "network:\n  - type: user\n    forward: [{host: 1, guest: 2}]\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    over = write(sub / "over.yml", "memory: 2G\ntags: [z]\nnetwork:\n  - {type: tap, ifname: t}\n")
    raw, base_dir = load_definition([base, over])
    assert raw == {
        "name": "a", "memory": "2G", "tags": ["z"],
        "storage": [{"name": "d", "type": "qcow2", "size": "1G"}],
        "network": [{"type": "tap", "ifname": "t"}],
    }
    assert base_dir == sub  # the LAST file's directory


def test_nested_mappings_merge(tmp_path: Path):
    a = write(tmp_path / "a.yml", "x: {p: 1, q: {r: 1, s: 1}}\n")
    b = write(tmp_path / "b.yml", "x: {q: {s: 2}}\n")
    raw, _ = load_definition([a, b])
    assert raw == {"x": {"p": 1, "q": {"r": 1, "s": 2}}}


def test_sets_apply_after_files_and_name_last(tmp_path: Path):
    f = write(tmp_path / "vm.yml", "name: a\nstorage:\n  - {name: d, type: qcow2, size: 1G}\n")
    raw, _ = load_definition(
        [f],
        ["memory=1G", "cpu=4", "tags=[a,b]", "storage.0.size=4G", "name=b",
         "append=console=ttyS0 quiet"],
        name="c",
    )
    assert raw["memory"] == "1G" and raw["cpu"] == 4 and raw["tags"] == ["a", "b"]
    assert raw["storage"][0]["size"] == "4G"
    assert raw["append"] == "console=ttyS0 quiet"
    assert raw["name"] == "c"


def test_no_files_means_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    raw, base_dir = load_definition([], ["memory=1G"], name="vm")
    assert raw == {"memory": "1G", "name": "vm"} and base_dir == tmp_path


def test_relative_file_gives_absolute_base_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "vm.yml", "name: a\n")
    _, base_dir = load_definition([Path("vm.yml")])
    assert base_dir.is_absolute() and base_dir == tmp_path


def test_empty_file_is_an_empty_mapping(tmp_path: Path):
    f = write(tmp_path / "empty.yml", "# nothing yet\n")
    assert load_definition([f])[0] == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("memory=1G", ("memory", "1G")),
        ("cpu=4", ("cpu", 4)),
        ("tags=[a,b]", ("tags", ["a", "b"])),
        ("storage.0.size=4G", ("storage.0.size", "4G")),
        ("readonly=true", ("readonly", True)),
        ("machine=", ("machine", None)),
        ("append=console=ttyS0", ("append", "console=ttyS0")),
        (" cpu =2", ("cpu", 2)),
        ("mac=52:54:00:12:34:56", ("mac", "52:54:00:12:34:56")),
        ("forward=[{host: 2222, guest: 22}]", ("forward", [{"host": 2222, "guest": 22}])),
        ("name='007'", ("name", "007")),
    ],
)
def test_parse_set(text: str, expected: tuple[str, Any]):
    assert parse_set(text) == expected


@pytest.mark.parametrize(
    ("text", "sets", "message"),
    [
        ("name: a", ["memory"], "--set 'memory': no '=' in it"),
        ("name: a", ["=1G"], "--set '=1G': empty key"),
        ("name: a", ["a..b=1"], "empty key in the path"),
        ("name: a", ["tags=[a,"], r"--set 'tags=\[a,': invalid YAML"),
        ("name: a", ["storage.0.size=4G"], "storage has no item '0'; storage is not set"),
        ("storage: [{}]", ["storage.5.size=4G"],
         "storage has no item '5'; use an index from 0 to 0"),
        ("storage: []", ["storage.0=x"], "storage has no item '0'; storage is an empty list"),
        ("name: a", ["name.x=1"], "name is a string, not a mapping or list"),
        # a digit to str.isdigit(), not to int(): no ValueError
        ("storage: [{}]", ["storage.\u00b2.size=4G"], "storage has no item '\u00b2'"),
        ("storage: [{}]", ["storage." + "9" * 5000 + "=x"], r"storage has no item '9+\.\.\."),
        ("name: a", ["tags=" + "[" * 1000 + "]" * 1000], "tags: is nested more than 32 levels"),
        ("name: a", ["cpu=!!int x"], r"cpu: !!int 'x' is not an integer"),
    ],
)
def test_bad_sets(tmp_path: Path, text: str, sets: list[str], message: str):
    with pytest.raises(ConfigError, match=message):
        load_definition([write(tmp_path / "vm.yml", text)], sets)


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"nope\.yml: no such file"):
        load_definition([tmp_path / "nope.yml"])


def test_directory_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_definition([tmp_path])


def test_non_utf8_file(tmp_path: Path):
    f = tmp_path / "vm.yml"
    f.write_bytes(b"name: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_definition([f])


def test_yaml_error_names_file_line_and_column(tmp_path: Path):
    f = write(tmp_path / "vm.yml", "name: a\nmemory: 1G\n  cpu: 2\n")
    with pytest.raises(ConfigError) as info:
        load_definition([f])
    assert str(info.value).startswith(f"{f}: invalid YAML at line 3, column 6")
    assert info.value.path == ""


def test_later_file_errors_name_that_file(tmp_path: Path):
    good = write(tmp_path / "good.yml", "name: a\n")
    bad = write(tmp_path / "bad.yml", "[\n")
    with pytest.raises(ConfigError, match=r"bad\.yml: invalid YAML"):
        load_definition([good, bad])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mac: 52:54:00:12:34:56", "52:54:00:12:34:56"),  # not base 60
        ("mac: 1:30", "1:30"),
        ("mac: 2024-01-31", "2024-01-31"),  # not a date
        ("mac: 010", "010"),  # not octal
        ("mac: 10", 10),
        ("mac: 0x10", 16),
        ("mac: 1_000", 1000),
        ("mac: 1.5", 1.5),
        ("mac: yes", True),
        ("mac: null", None),
        ("mac: 1.5G", "1.5G"),
    ],
)
def test_yaml_dialect(tmp_path: Path, text: str, expected: Any):
    raw, _ = load_definition([write(tmp_path / "vm.yml", text + "\n")])
    assert raw["mac"] == expected and type(raw["mac"]) is type(expected)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path):
    text = "base: &b {memory: 1G, cpu: 1}\nvm:\n  <<: *b\n  cpu: 2\n"
    raw, _ = load_definition([write(tmp_path / "vm.yml", text)])
    assert raw["vm"] == {"memory": "1G", "cpu": 2}


def test_importing_spec_does_not_import_yaml():
    code = "import sys, maqet_engine.definition; print('yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
