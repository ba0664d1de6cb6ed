"""The ``cloud_init`` section in the spec: stored in canonical form (an unchanged section
never changes the hash, a changed one always does), ``hostname`` defaulting to the VM's
name, and the seed disk on QEMU's command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from maqet_engine.cloudinit.config import KEYS, USER_KEYS
from maqet_engine.definition import Spec, build_argv
from maqet_engine.definition.schema import CLOUD_INIT, CLOUD_INIT_USER, TOP
from maqet_engine.paths import Paths

Parse = Callable[..., Spec]
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBWHlnhseLcB6KFFD4MBTA4 "
       "me@laptop")


def cloud(parse: Parse, section: Any, name: str = "vm", **more: Any) -> Spec:
    return parse({"name": name, "cloud_init": section, **more})


def test_the_documented_keys_are_the_checked_keys():
    """schema.py documents the section; maqet_engine.cloudinit checks it: same keys."""
    assert sorted(CLOUD_INIT.keys()) == sorted(KEYS)
    assert sorted(CLOUD_INIT_USER.keys()) == sorted(USER_KEYS)
    assert TOP.field("cloud_init").entries == "cloud_init"


def test_stored_in_canonical_form(parse: Parse):
    spec = cloud(parse, {"users": [{"name": "tester", "ssh_authorized_keys": [f"  {KEY}  "],
                                    "sudo": True}]})
    assert spec.data["cloud_init"] == {
        "hostname": "vm", "meta_data": {}, "network_config": None,
        "ssh_authorized_keys": [], "user_data": {},
        "users": [{"name": "tester", "ssh_authorized_keys": [KEY],
                   "sudo": "ALL=(ALL) NOPASSWD:ALL"}]}


def test_without_cloud_init_the_spec_has_no_such_key(parse: Parse):
    """Definitions written before cloud_init existed keep their hash."""
    assert "cloud_init" not in parse({"name": "vm"}).data
    assert "cloud_init" not in parse({"name": "vm", "cloud_init": None}).data


def test_equivalent_sections_give_one_hash(parse: Parse):
    a = cloud(parse, {"hostname": "vm", "users": [{"name": "u", "sudo": True}],
                      "user_data": {"packages": ["git"], "runcmd": [["true"]]}})
    b = cloud(parse, {"user_data": {"runcmd": [["true"]], "packages": ["git"]},
                      "users": [{"sudo": "ALL=(ALL) NOPASSWD:ALL", "name": "u",
                                 "ssh_authorized_keys": []}]})
    assert a.hash == b.hash


@pytest.mark.parametrize("change", [
    {"hostname": "other"},
    {"users": [{"name": "u"}]},
    {"user_data": {"packages": ["git", "curl"]}},
    {"meta_data": {"zone": "b"}},
    {"network_config": {"version": 2, "ethernets": {}}},
])
def test_any_change_changes_the_hash(parse: Parse, change: dict[str, Any]):
    base = {"users": [{"name": "u", "sudo": True}], "user_data": {"packages": ["git"]},
            "meta_data": {"zone": "a"}}
    assert cloud(parse, base).hash != cloud(parse, {**base, **change}).hash


def test_an_empty_section_is_a_seed(parse: Parse):
    assert cloud(parse, {}).data["cloud_init"]["hostname"] == "vm"


@pytest.mark.parametrize(("name", "section", "hostname"), [
    ("web1", {}, "web1"),
    ("web1", {"hostname": "other"}, "other"),
    ("web_1", {}, None),  # not a host name: the image keeps its own
    ("web1", {"user_data": {"hostname": "ud"}}, None),
    ("web1", {"user_data": {"fqdn": "web1.example.org"}}, None),
    ("web1", {"meta_data": {"local-hostname": "md"}}, None),
    ("web1", {"user_data": "#!/bin/sh\ntrue\n"}, "web1"),  # text: meta-data still names it
])
def test_hostname_defaults_to_the_vm_name(parse: Parse, name: str, section: dict[str, Any],
                                          hostname: str | None):
    assert cloud(parse, section, name=name).data["cloud_init"]["hostname"] == hostname


def test_hostname_given_as_the_vm_name_is_the_same_spec(parse: Parse):
    assert cloud(parse, {}, name="web1").hash == cloud(parse, {"hostname": "web1"},
                                                       name="web1").hash


def test_seed_disk_follows_the_disks_and_precedes_the_nics(parse: Parse, paths: Paths):
    spec = cloud(parse, {}, storage=[{"name": "root", "type": "qcow2", "size": "1G"}],
                 network=[{"type": "user"}])
    argv = build_argv(spec, runtime=paths.vm_runtime(7), data=paths.vm_data("vm"),
                      accel="tcg")
    devices = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-device"]
    assert devices == ["virtio-blk-pci,drive=root,id=root",
                       "virtio-blk-pci,drive=cidata,id=cidata", "virtio-net-pci,netdev=net0"]
    node = json.loads(argv[argv.index("virtio-blk-pci,drive=cidata,id=cidata") - 2])
    assert node == {"driver": "raw", "node-name": "cidata", "read-only": True,
                    "file": {"driver": "file", "read-only": True,
                             "filename": str(paths.vm_data("vm").root / "cidata.iso")}}


def test_no_seed_disk_without_cloud_init(parse: Parse, paths: Paths):
    argv = build_argv(parse({"name": "vm"}), runtime=paths.vm_runtime(7),
                      data=paths.vm_data("vm"), accel="tcg")
    assert not any("cidata" in arg for arg in argv)


def test_a_storage_entry_named_cidata_is_fine_without_cloud_init(parse: Parse):
    """Someone attaching a seed of their own keeps doing so."""
    spec = parse({"name": "vm", "storage": [{"name": "cidata", "type": "raw", "size": 1}]})
    assert spec.data["storage"][0]["name"] == "cidata"
