"""parse_spec: explicit defaults, normalization, hash equality and Spec round trips."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.definition import Spec, load_definition, parse_spec
from maqet_engine.errors import ConfigError
from maqet_engine.paths import Paths

Parse = Callable[..., Spec]
MiB = 1024 * 1024


def test_minimal_definition_has_every_key_and_only_runner_defaults(parse: Parse):
    spec = parse({"name": "a"})
    assert spec.data == {
        "name": "a", "binary": "qemu-system-x86_64", "machine": None, "accel": "auto",
        "memory": None, "cpu": None, "cpu_model": None, "storage": [], "network": [],
        "kernel": None, "initrd": None, "append": None, "display": "none", "vga": "std",
        "arguments": [], "tags": [],
    }
    assert spec.name == "a"


def test_full_definition_normalized(parse: Parse, defdir: Path, paths: Paths):
    spec = parse({
        "name": "web1", "machine": "q35", "accel": "kvm", "memory": "1.5G", "cpu": 2,
        "cpu_model": "host", "kernel": "vmlinuz", "initrd": "./initrd.gz",
        "append": "console=ttyS0", "display": "gtk", "vga": "virtio",
        "arguments": ["-S", ""], "tags": ["b", "a", "b"],
    })
    d = spec.data
    assert d["memory"] == 1536 * MiB
    assert d["kernel"] == str(defdir / "vmlinuz") and d["initrd"] == str(defdir / "initrd.gz")
    assert d["tags"] == ["a", "b"] and d["arguments"] == ["-S", ""]


def test_spec_json_round_trip_and_hash(parse: Parse):
    spec = parse({"name": "a", "memory": 512, "tags": ["x"]})
    again = Spec.from_json(spec.to_json())
    assert again == spec and again.hash == spec.hash and hash(again) == hash(spec)
    assert json.loads(spec.to_json()) == spec.data
    assert spec.to_json() == json.dumps(spec.data, sort_keys=True, separators=(",", ":"))
    assert len(spec.hash) == 64 and int(spec.hash, 16) >= 0
    assert {spec, again} == {spec}


def test_hash_is_pinned():
    """The hash is stored: it may only change when the normalized form does."""
    spec = Spec({"name": "a", "tags": [], "memory": 1})
    assert spec.to_json() == '{"memory":1,"name":"a","tags":[]}'
    assert spec.hash == "8bfdf511a4e7fa1b890aff1e14d3dae094dce753ddde0920f5fa93c003932daa"


SAME_MEANING: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("key-order", {"name": "a", "cpu": 2, "memory": "1G"}, {"memory": "1G", "cpu": 2, "name": "a"}),
    ("memory-spellings", {"name": "a", "memory": "512M"}, {"name": "a", "memory": "524288K"}),
    ("memory-bare-mib", {"name": "a", "memory": 512}, {"name": "a", "memory": "0.5GiB"}),
    ("memory-bytes", {"name": "a", "memory": "512MB"}, {"name": "a", "memory": "536870912b"}),
    ("defaults-explicit", {"name": "a"},
     {"name": "a", "accel": "auto", "display": "none", "vga": "std", "storage": [],
      "network": [], "tags": [], "arguments": [], "binary": "qemu-system-x86_64"}),
    ("nulls-are-unset", {"name": "a"}, {"name": "a", "machine": None, "memory": None,
                                        "storage": None, "tags": None}),
    ("tags-order-dupes", {"name": "a", "tags": ["b", "a"]}, {"name": "a", "tags": ["a", "b", "a"]}),
    ("relative-vs-absolute", {"name": "a", "kernel": "vmlinuz"},
     {"name": "a", "kernel": "{defdir}/vmlinuz"}),
    ("dotdot-path", {"name": "a", "kernel": "vmlinuz"},
     {"name": "a", "kernel": "../def/./vmlinuz"}),
    ("disk-size-spellings",
     {"name": "a", "storage": [{"name": "d", "type": "qcow2", "size": "1G"}]},
     {"name": "a", "storage": [{"name": "d", "type": "qcow2", "size": 1073741824}]}),
    ("disk-default-file",
     {"name": "a", "storage": [{"name": "d", "type": "qcow2", "size": "1G"}]},
     {"name": "a", "storage": [{"name": "d", "type": "qcow2", "size": "1G", "file": "d.qcow2",
                                "interface": "virtio", "readonly": False}]}),
    ("mac-case",
     {"name": "a", "network": [{"type": "user", "mac": "52:54:00:AB:CD:EF"}]},
     {"name": "a", "network": [{"type": "user", "mac": "52:54:00:ab:cd:ef"}]}),
    ("forward-defaults-and-order",
     {"name": "a", "network": [{"type": "user", "forward": [{"host": 2, "guest": 2},
                                                            {"host": 1, "guest": 1}]}]},
     {"name": "a", "network": [{"type": "user", "model": "virtio-net-pci", "forward": [
         {"host": 1, "guest": 1, "protocol": "tcp", "host_address": "127.0.0.1"},
         {"host": 2, "guest": 2}]}]}),
    ("virtfs-tag-default",
     {"name": "a", "storage": [{"name": "s", "type": "virtfs", "path": "share"}]},
     {"name": "a", "storage": [{"name": "s", "type": "virtfs", "path": "{defdir}/share/",
                                "mount_tag": "s", "security_model": "mapped-xattr"}]}),
]

DIFFERENT_MEANING: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("memory", {"name": "a", "memory": "512M"}, {"name": "a", "memory": "1G"}),
    ("memory-bare-is-mib", {"name": "a", "memory": 4096}, {"name": "a", "memory": "4096K"}),
    ("memory-set-vs-unset", {"name": "a"}, {"name": "a", "memory": "128M"}),
    ("name", {"name": "a"}, {"name": "b"}),
    ("accel", {"name": "a"}, {"name": "a", "accel": "tcg"}),
    ("storage-order",
     {"name": "a", "storage": [{"name": "d", "type": "qcow2", "size": 1},
                               {"name": "e", "type": "qcow2", "size": 1}]},
     {"name": "a", "storage": [{"name": "e", "type": "qcow2", "size": 1},
                               {"name": "d", "type": "qcow2", "size": 1}]}),
    ("network-order",
     {"name": "a", "network": [{"type": "user"}, {"type": "tap", "ifname": "t"}]},
     {"name": "a", "network": [{"type": "tap", "ifname": "t"}, {"type": "user"}]}),
    ("arguments-order", {"name": "a", "arguments": ["-a", "-b"]},
     {"name": "a", "arguments": ["-b", "-a"]}),
    ("disk-readonly",
     {"name": "a", "storage": [{"name": "d", "type": "qcow2", "size": 1}]},
     {"name": "a", "storage": [{"name": "d", "type": "qcow2", "size": 1, "readonly": True}]}),
]


def _fill(raw: dict[str, Any], defdir: Path) -> dict[str, Any]:
    text = json.dumps(raw).replace("{defdir}", str(defdir))
    return json.loads(text)


@pytest.mark.parametrize(("case", "one", "other"), SAME_MEANING, ids=[c[0] for c in SAME_MEANING])
def test_same_meaning_same_hash(parse: Parse, defdir: Path, case: str, one: dict[str, Any],
                                other: dict[str, Any]):
    a, b = parse(_fill(one, defdir)), parse(_fill(other, defdir))
    assert a == b and a.hash == b.hash and a.to_json() == b.to_json()


@pytest.mark.parametrize(("case", "one", "other"), DIFFERENT_MEANING,
                         ids=[c[0] for c in DIFFERENT_MEANING])
def test_different_meaning_different_hash(parse: Parse, case: str, one: dict[str, Any],
                                          other: dict[str, Any]):
    assert parse(one).hash != parse(other).hash


def test_memory_bare_number_is_mib_and_min(parse: Parse):
    assert parse({"name": "a", "memory": 2}).data["memory"] == 2 * MiB
    assert parse({"name": "a", "memory": "2097152B"}).data["memory"] == 2 * MiB


def test_normalized_data_parses_to_itself(parse: Parse):
    """Normalization is idempotent (memory is bytes, so feed it back with a B suffix)."""
    spec = parse({
        "name": "a", "memory": "1G", "kernel": "vmlinuz", "append": "x", "tags": ["b", "a"],
        "storage": [{"name": "d", "type": "qcow2", "size": "1G", "backing": "base.qcow2"},
                    {"name": "cd", "type": "cdrom", "file": "debian.iso"},
                    {"name": "s", "type": "virtfs", "path": "share"}],
        "network": [{"type": "user", "forward": [{"host": 2, "guest": 2}]},
                    {"type": "tap", "ifname": "tap0", "mac": "52:54:00:00:00:01"}],
    })
    again = dict(spec.data, memory=f"{spec.data['memory']}B")
    assert parse(again) == spec


def test_binary_path_is_made_absolute_but_a_command_is_kept(parse: Parse, defdir: Path):
    assert parse({"name": "a", "binary": "qemu-kvm"}).data["binary"] == "qemu-kvm"
    assert parse({"name": "a", "binary": "./bin/qemu"}).data["binary"] == str(defdir / "bin/qemu")
    assert parse({"name": "a", "binary": "/usr/bin/qemu"}).data["binary"] == "/usr/bin/qemu"


def test_home_is_expanded(parse: Parse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path / "def"))
    assert parse({"name": "a", "kernel": "~/vmlinuz"}).data["kernel"] == str(
        tmp_path / "def" / "vmlinuz")


def test_relative_base_dir_is_made_absolute(paths: Paths, defdir: Path,
                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(defdir.parent)
    spec = parse_spec({"name": "a", "kernel": "vmlinuz"}, base_dir=Path("def"), paths=paths)
    assert spec.data["kernel"] == str(defdir / "vmlinuz")


def test_kernel_initrd_append_together(parse: Parse):
    spec = parse({"name": "a", "kernel": "vmlinuz", "initrd": "initrd.gz", "append": "quiet"})
    assert spec.data["append"] == "quiet"


def test_not_a_mapping(parse: Parse):
    with pytest.raises(ConfigError, match="not a mapping"):
        parse(["name", "a"])


def test_parse_spec_does_not_mutate_its_input(parse: Parse):
    raw = {"name": "a", "tags": ["b", "a"], "storage": [{"name": "d", "type": "qcow2",
                                                        "size": "1G"}]}
    snapshot = json.dumps(raw)
    parse(raw)
    assert json.dumps(raw) == snapshot


def test_end_to_end_from_files(tmp_path: Path, defdir: Path, paths: Paths):
    (defdir / "base.yml").write_text("name: web\nmemory: 512M\nkernel: vmlinuz\n")
    (defdir / "prod.yml").write_text("memory: 1G\ntags: [prod]\n")
    raw, base = load_definition([defdir / "base.yml", defdir / "prod.yml"], ["cpu=2"])
    spec = parse_spec(raw, base_dir=base, paths=paths)
    assert (spec.data["memory"], spec.data["cpu"], spec.data["tags"]) == (1024 * MiB, 2, ["prod"])
    assert spec.data["kernel"] == str(defdir / "vmlinuz")


def test_digit_strings_are_integers(parse: Parse):
    """What Ansible hands over for "{{ n }}" with -e n=2, or an INI inventory value."""
    as_text = parse({"name": "a", "cpu": "2", "network": [
        {"type": "user", "forward": [{"host": " 2222 ", "guest": "22"}]}]})
    as_numbers = parse({"name": "a", "cpu": 2, "network": [
        {"type": "user", "forward": [{"host": 2222, "guest": 22}]}]})
    assert as_text.data["cpu"] == 2 and as_text.hash == as_numbers.hash
