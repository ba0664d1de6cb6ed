"""Storage entries: per-type normalization, shared-resource rules and the registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.definition import (
    Spec,
    StorageArgs,
    StorageRegistry,
    StorageType,
    build_argv,
    default_registry,
)
from maqet_engine.definition.machine import DeviceSlots
from maqet_engine.definition.schema import Field, Kind
from maqet_engine.errors import ConfigError
from maqet_engine.paths import Paths

Parse = Callable[..., Spec]


def storage(parse: Parse, *entries: dict[str, Any]) -> list[dict[str, Any]]:
    return parse({"name": "vm", "storage": list(entries)}).data["storage"]


def test_qcow2_defaults_into_the_vm_directory(parse: Parse, paths: Paths):
    [disk] = storage(parse, {"name": "root", "type": "qcow2", "size": "10G"})
    assert disk == {
        "name": "root", "type": "qcow2", "file": str(paths.vm_data("vm").root / "root.qcow2"),
        "size": 10 * 1024**3, "interface": "virtio", "readonly": False, "backing": None,
    }


def test_relative_disk_file_is_in_the_vm_directory_not_cwd(
        parse: Parse, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    [disk] = storage(parse, {"name": "d", "type": "raw", "file": "sub/disk.img", "size": 1})
    assert disk["file"] == str(paths.vm_data("vm").root / "sub" / "disk.img")
    assert disk == {"name": "d", "type": "raw", "file": disk["file"], "size": 1,
                    "interface": "virtio", "readonly": False}


def test_absolute_disk_file_is_kept(parse: Parse, defdir: Path):
    [disk] = storage(parse, {"name": "d", "type": "raw", "file": str(defdir / "x.img"),
                             "size": 512})
    assert disk["file"] == str(defdir / "x.img")


def test_size_not_needed_for_an_existing_file_or_an_overlay(parse: Parse, defdir: Path):
    existing, overlay = storage(
        parse,
        {"name": "old", "type": "qcow2", "file": str(defdir / "base.qcow2"), "readonly": True},
        {"name": "new", "type": "qcow2", "backing": "base.qcow2"},
    )
    assert existing["size"] is None and overlay["size"] is None
    assert overlay["backing"] == str(defdir / "base.qcow2")


def test_size_not_needed_once_the_disk_exists_in_the_vm_dir(parse: Parse, paths: Paths):
    vm_dir = paths.vm_data("vm").root
    vm_dir.mkdir(parents=True)
    (vm_dir / "root.qcow2").write_bytes(b"")
    [disk] = storage(parse, {"name": "root", "type": "qcow2"})
    assert disk["size"] is None


def test_cdrom_is_relative_to_the_definition(parse: Parse, defdir: Path):
    [cd] = storage(parse, {"name": "cd", "type": "cdrom", "file": "debian.iso"})
    assert cd == {"name": "cd", "type": "cdrom", "file": str(defdir / "debian.iso")}


def test_virtfs_defaults(parse: Parse, defdir: Path):
    [share] = storage(parse, {"name": "src", "type": "virtfs", "path": "share"})
    assert share == {"name": "src", "type": "virtfs", "path": str(defdir / "share"),
                     "mount_tag": "src", "security_model": "mapped-xattr", "readonly": False,
                     "allow_dangerous": False}


def test_virtfs_refuses_a_symlink_to_a_system_dir(parse: Parse, defdir: Path):
    (defdir / "innocent").symlink_to("/etc")
    with pytest.raises(ConfigError) as info:
        storage(parse, {"name": "s", "type": "virtfs", "path": "innocent"})
    assert info.value.path == "storage[0].path"
    assert f"{defdir}/innocent (really /etc) is a host system directory" in str(info.value)
    assert "allow_dangerous: true" in str(info.value)


def test_virtfs_allow_dangerous(parse: Parse):
    [share] = storage(parse, {"name": "s", "type": "virtfs", "path": "/", "readonly": True,
                              "allow_dangerous": True})
    assert share["path"] == "/" and share["allow_dangerous"] is True


def test_a_subdirectory_of_a_system_dir_is_not_refused(parse: Parse):
    """Only exactly / /root /home /var are refused; inside them sharing is fine (inside
    /etc /proc /sys /dev /boot /run /usr it is not: docs/security.md)."""
    [share] = storage(parse, {"name": "s", "type": "virtfs", "path": "/var/tmp"})
    assert share["path"] == "/var/tmp"


def test_two_read_only_users_may_share_an_image(parse: Parse, defdir: Path):
    entries = storage(
        parse,
        {"name": "a", "type": "cdrom", "file": "debian.iso"},
        {"name": "b", "type": "cdrom", "file": str(defdir / "debian.iso")},
        {"name": "c", "type": "raw", "file": str(defdir / "debian.iso"), "readonly": True},
    )
    assert len({e["file"] for e in entries}) == 1


def test_a_writable_disk_cannot_share_a_cdrom_image(parse: Parse, defdir: Path):
    with pytest.raises(ConfigError, match=r"storage\[1\].file: .* is already used by storage"):
        storage(parse, {"name": "a", "type": "cdrom", "file": "debian.iso"},
                {"name": "b", "type": "raw", "file": str(defdir / "debian.iso")})


def test_names_are_unique_across_types(parse: Parse):
    with pytest.raises(ConfigError, match=r"storage\[1\].name: 'x' is already the name"):
        storage(parse, {"name": "x", "type": "virtfs", "path": "share"},
                {"name": "x", "type": "cdrom", "file": "debian.iso"})


# --- registry -------------------------------------------------------------------

class NbdStorage(StorageType):
    """A type defined outside maqet: one class, registered on one registry."""

    type_name = "nbd"
    doc = "A disk exported by an NBD server."
    fields = (
        Field("host", Kind.STR, "NBD server.", required=True),
        Field("port", Kind.INT, "NBD port.", default=10809, minimum=1, maximum=65535),
    )

    def argv(self, entry: Mapping[str, Any], slots: DeviceSlots) -> StorageArgs:
        node = (f'{{"driver":"nbd","node-name":"{entry["name"]}","server":{{"type":"inet",'
                f'"host":"{entry["host"]}","port":"{entry["port"]}"}}}}')
        return StorageArgs(("-blockdev", node, "-device",
                            f"virtio-blk-pci,drive={entry['name']},id={entry['name']}"))


def test_default_registry_types():
    assert default_registry().types() == ("qcow2", "raw", "virtfs", "cdrom")


def test_default_registries_are_independent():
    one, two = default_registry(), default_registry()
    assert one is not two
    one.register(NbdStorage)
    assert "nbd" in one and "nbd" not in two and "nbd" not in default_registry()


def test_a_new_type_works_end_to_end(parse: Parse, paths: Paths):
    registry = default_registry()
    registry.register(NbdStorage)
    raw = {"name": "vm", "storage": [{"name": "remote", "type": "nbd", "host": "nas"}]}
    spec = parse(raw, registry=registry)
    assert spec.data["storage"] == [{"name": "remote", "type": "nbd", "host": "nas",
                                     "port": 10809}]
    argv = build_argv(spec, runtime=paths.vm_runtime(1), data=paths.vm_data("vm"), accel="tcg",
                      registry=registry)
    assert "virtio-blk-pci,drive=remote,id=remote" in argv
    with pytest.raises(ConfigError, match="'nbd' is not a storage type; use one of qcow2, raw"):
        parse(raw)  # the default registry does not know it
    with pytest.raises(ConfigError, match=r"storage\[0\].hots: unknown key; did you mean"):
        parse({"name": "vm", "storage": [{"name": "r", "type": "nbd", "hots": "x"}]},
              registry=registry)


def test_an_empty_registry_knows_nothing(parse: Parse):
    registry = StorageRegistry()
    assert registry.types() == ()
    with pytest.raises(KeyError):
        registry.get("qcow2")
    with pytest.raises(ConfigError, match="is not a storage type"):
        parse({"name": "vm", "storage": [{"name": "d", "type": "qcow2"}]}, registry=registry)


def test_registering_a_name_twice_is_refused():
    registry = default_registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(type("Again", (NbdStorage,), {"type_name": "qcow2"}))


def test_register_returns_the_class_for_decorator_use():
    registry = StorageRegistry()
    assert registry.register(NbdStorage) is NbdStorage
    assert isinstance(registry.get("nbd"), NbdStorage)


def test_the_module_holds_no_registry():
    import maqet_engine.definition.storage as storage_module

    public = {k: v for k, v in vars(storage_module).items() if not k.startswith("__")}
    assert not [k for k, v in public.items() if isinstance(v, StorageRegistry | dict)]
    assert isinstance(storage_module.BUILTIN_STORAGE_TYPES, tuple)
