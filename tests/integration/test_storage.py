"""Storage lifecycle against real qemu-img: creation (and linked clones), registration,
purge of only what maqet created, orphans, and claims across VMs. No QEMU process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.cli.main import main as maqet_main
from maqet_engine.definition import parse_spec
from maqet_engine.engine import describe_action
from maqet_engine.errors import ConfigError, StateConflict
from maqet_engine.paths import resolve_paths
from maqet_engine.storage import check_claims, prepare_storage, purge_files, purge_orphans
from maqet_engine.store import Store
from maqet_engine.store import storage_records as records

pytestmark = pytest.mark.qemu


def define(home: Path, name: str, *storage: dict[str, Any], check: bool = True) -> Any:
    paths = resolve_paths()
    spec = parse_spec({"name": name, "storage": list(storage)}, base_dir=home, paths=paths)
    with Store.open(paths.db) as store:
        if check:
            check_claims(store, spec)
        store.insert_vm(spec.name, spec.to_json(), spec.hash)
    return spec


def img_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    """``maqet ARGV --json`` in-process, with the storage and snapshot commands
    registered even before cli/main.py lists them."""
    import argparse

    from maqet_engine.cli import main as cli_main
    from maqet_engine.cli import snapshot_cmds, storage_cmds

    original = cli_main.build_parser

    def build_parser() -> argparse.ArgumentParser:
        parser = original()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for module, command in ((storage_cmds, "storage"), (snapshot_cmds, "snapshot")):
            if command not in sub.choices:
                module.register(sub, cli_main._common_options())
        return parser

    cli_main.build_parser = build_parser
    try:
        code = maqet_main([*argv, "--json"])
    finally:
        cli_main.build_parser = original
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_missing_disks_are_created_in_the_vm_dir_and_registered(maqet_home: Path):
    spec = define(maqet_home, "vm1", {"name": "hdd", "type": "qcow2", "size": "64M"},
                  {"name": "swap", "type": "raw", "file": "swap.img", "size": "1M"})
    paths = resolve_paths()
    vm_dir = paths.vm_data("vm1").root
    with Store.open(paths.db) as store:
        checked = prepare_storage(paths, store, spec, check_mode=True)
        assert [describe_action(a) for a in checked] == [
            "created disk hdd (64M)", "created disk swap (1M)"]
        assert not vm_dir.exists()
        actions = prepare_storage(paths, store, spec)
        assert actions == checked  # the same actions, check mode or not
        assert actions[0] == {"action": "create_disk", "storage": "hdd", "size": 64 << 20,
                              "path": str(vm_dir / "hdd.qcow2"), "backing": None}
        assert img_info(vm_dir / "hdd.qcow2")["format"] == "qcow2"
        assert img_info(vm_dir / "hdd.qcow2")["virtual-size"] == 64 << 20
        assert (vm_dir / "swap.img").stat().st_size == 1 << 20
        assert sorted(r.storage for r in records.files_of(store, "vm1")) == ["hdd", "swap"]
        assert prepare_storage(paths, store, spec) == []  # idempotent
    assert not list(vm_dir.glob(".*tmp"))


def test_backing_makes_small_linked_clones(maqet_home: Path, tmp_path: Path):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1G"], check=True)
    paths = resolve_paths()
    with Store.open(paths.db) as store:
        for i in range(3):
            spec = define(maqet_home, f"clone{i}",
                          {"name": "hdd", "type": "qcow2", "backing": str(base)})
            assert [describe_action(a) for a in prepare_storage(paths, store, spec)] == [
                f"created disk hdd (overlay on {base})"]
    overlay = paths.vm_data("clone2").root / "hdd.qcow2"
    info = img_info(overlay)
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 1 << 30
    assert overlay.stat().st_size < 1 << 20  # an overlay, not a copy


def test_missing_disk_without_size_is_a_config_error_naming_the_entry(maqet_home: Path):
    paths = resolve_paths()
    spec = {"name": "vm1", "storage": [{"name": "hdd", "type": "qcow2",
                                        "file": str(maqet_home / "gone.qcow2")}],
            }
    # the spec refuses it at define time ...
    with pytest.raises(ConfigError, match=r"storage\[0\]\.size"):
        parse_spec(spec, base_dir=maqet_home, paths=paths)
    # ... and prepare_storage still does when the file vanished after definition
    (maqet_home / "gone.qcow2").parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(maqet_home / "gone.qcow2"),
                    "1M"], check=True)
    parsed = define(maqet_home, "vm1", *spec["storage"])
    (maqet_home / "gone.qcow2").unlink()
    with Store.open(paths.db) as store, pytest.raises(ConfigError) as err:
        prepare_storage(paths, store, parsed)
    assert err.value.path == "storage[0].size"
    assert "storage entry 'hdd'" in str(err.value)


def test_a_raw_file_declared_qcow2_is_refused_before_qemu_sees_it(maqet_home: Path):
    paths = resolve_paths()
    raw = maqet_home / "disk.img"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"\0" * 4096)
    spec = define(maqet_home, "vm1", {"name": "hdd", "type": "qcow2", "file": str(raw)})
    with Store.open(paths.db) as store, pytest.raises(ConfigError, match="not a qcow2 image"):
        prepare_storage(paths, store, spec)


def test_purge_deletes_only_what_maqet_created(maqet_home: Path, tmp_path: Path):
    paths = resolve_paths()
    user_disk = tmp_path / "mine.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(user_disk), "1M"], check=True)
    spec = define(maqet_home, "vm1", {"name": "hdd", "type": "qcow2", "size": "1M"},
                  {"name": "mine", "type": "qcow2", "file": str(user_disk)})
    vm_dir = paths.vm_data("vm1").root
    with Store.open(paths.db) as store:
        prepare_storage(paths, store, spec)
        (vm_dir / "notes.txt").write_text("the user's own file")  # user file in the VM dir
        paths.vm_data("vm1").qemu_log.write_text("log")
        planned = purge_files(paths, store, "vm1", check_mode=True)
        assert sorted(planned) == sorted([vm_dir / "hdd.qcow2", vm_dir / "qemu.log"])
        assert (vm_dir / "hdd.qcow2").exists()
        store.delete_vm("vm1")
        assert purge_files(paths, store, "vm1") == planned
        assert records.files_of(store, "vm1") == []
    assert user_disk.exists()
    assert (vm_dir / "notes.txt").exists()
    assert not (vm_dir / "hdd.qcow2").exists()


def test_orphans_are_listed_and_removed(maqet_home: Path, capsys: pytest.CaptureFixture[str]):
    paths = resolve_paths()
    for name in ("keep", "gone"):
        spec = define(maqet_home, name, {"name": "hdd", "type": "qcow2", "size": "1M"})
        with Store.open(paths.db) as store:
            prepare_storage(paths, store, spec)
    with Store.open(paths.db) as store:
        store.delete_vm("gone")  # 'maqet rm gone' without --purge
    code, listed = cli("storage", "ls", capsys=capsys)
    assert code == 0
    assert {(e["vm"], e["orphaned"], e["exists"]) for e in listed} == {
        ("keep", False, True), ("gone", True, True)}
    code, orphans = cli("storage", "ls", "--orphaned", capsys=capsys)
    assert [e["vm"] for e in orphans] == ["gone"]
    gone_disk = Path(orphans[0]["path"])
    code, result = cli("storage", "rm", "--orphaned", "--check", capsys=capsys)
    assert result["deleted"] == [str(gone_disk)] and gone_disk.exists()
    code, result = cli("storage", "rm", "--orphaned", capsys=capsys)
    assert code == 0 and result["deleted"] == [str(gone_disk)]
    assert not gone_disk.exists() and not gone_disk.parent.exists()
    assert cli("storage", "ls", "--orphaned", capsys=capsys)[1] == []
    assert (paths.vm_data("keep").root / "hdd.qcow2").exists()


def test_an_orphan_another_vm_now_uses_is_kept(maqet_home: Path):
    paths = resolve_paths()
    spec = define(maqet_home, "old", {"name": "hdd", "type": "qcow2", "size": "1M"})
    with Store.open(paths.db) as store:
        prepare_storage(paths, store, spec)
        store.delete_vm("old")
    disk = paths.vm_data("old").root / "hdd.qcow2"
    define(maqet_home, "new", {"name": "hdd", "type": "qcow2", "file": str(disk)})
    with Store.open(paths.db) as store:
        assert purge_orphans(paths, store) == []
    assert disk.exists()


def test_two_vms_on_one_writable_disk_are_refused(maqet_home: Path, tmp_path: Path):
    disk = tmp_path / "shared.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
    define(maqet_home, "first", {"name": "hdd", "type": "qcow2", "file": str(disk)})
    link = tmp_path / "alias.qcow2"
    link.symlink_to(disk)
    with pytest.raises(StateConflict, match=r"storage 'root' of VM 'second' writes .*shared"
                       r"\.qcow2, which VM 'first' writes as the disk of its storage 'hdd'"):
        define(maqet_home, "second", {"name": "root", "type": "qcow2", "file": str(link)})
    # read-only users may share it with each other, never with a writer
    with pytest.raises(StateConflict, match="which VM 'first' writes"):
        define(maqet_home, "reader", {"name": "hdd", "type": "qcow2", "file": str(disk),
                                      "readonly": True})
    # a base image may back any number of overlays, but nobody may write it
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    define(maqet_home, "c1", {"name": "hdd", "type": "qcow2", "backing": str(base)})
    define(maqet_home, "c2", {"name": "hdd", "type": "qcow2", "backing": str(base)})
    with pytest.raises(StateConflict, match="as the backing image of its storage 'hdd'"):
        define(maqet_home, "writer", {"name": "hdd", "type": "qcow2", "file": str(base)})


def test_dangerous_virtfs_paths_are_refused_unless_allowed(maqet_home: Path):
    paths = resolve_paths()
    share = {"name": "share", "type": "virtfs", "path": "/etc"}
    with pytest.raises(ConfigError, match="host system directory") as err:
        parse_spec({"name": "vm1", "storage": [share]}, base_dir=maqet_home, paths=paths)
    assert "allow_dangerous: true" in str(err.value)
    parse_spec({"name": "vm1", "storage": [{**share, "allow_dangerous": True}]},
               base_dir=maqet_home, paths=paths)
