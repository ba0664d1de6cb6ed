"""Host paths a definition may hand to QEMU (docs/security.md): maqet's own files and
device nodes are refused (a block device only with ``device: true``), and every path
is judged again at start, as it resolves then. The plain system-path cases are in
tests/unit/definition/bad_configs.yaml."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from users import VICTIM, ensure_user

from maqet_engine import constants as C
from maqet_engine.cli.main import main
from maqet_engine.definition import build_argv, parse_spec
from maqet_engine.errors import ConfigError
from maqet_engine.paths import resolve_paths


@pytest.fixture
def paths(tmp_path):
    return resolve_paths({C.ENV_HOME: str(tmp_path / "home")})


def parse(raw, paths, base: Path):
    return parse_spec({"name": "vm1", **raw}, base_dir=base, paths=paths)


@pytest.mark.parametrize("which", ["store", "store-journal", "runtime", "log", "lock"])
def test_maqets_own_files_are_refused_as_disks(which, paths, tmp_path):
    target = {"store": paths.db, "store-journal": Path(f"{paths.db}-wal"),
              "runtime": paths.vm_runtime(1).root / "some.img",
              "log": paths.vm_data("vm2").serial_log,
              "lock": paths.vm_runtime(1).lock_file}[which]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"")
    with pytest.raises(ConfigError, match="is one of maqet's own files") as info:
        parse({"storage": [{"name": "d", "type": "raw", "file": str(target)}]}, paths, tmp_path)
    assert info.value.path == "storage[0].file"
    # ... also spelled through a symlink, or as a read-only CD-ROM
    link = tmp_path / "innocent.img"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match=r"\(really .*\) is one of maqet's own files"):
        parse({"storage": [{"name": "cd", "type": "cdrom", "file": str(link)}]}, paths, tmp_path)


def test_disks_in_the_vms_own_directory_are_fine(paths, tmp_path):
    spec = parse({"storage": [{"name": "d", "type": "qcow2", "size": "1M"}]}, paths, tmp_path)
    assert spec.data["storage"][0]["file"].startswith(str(paths.vm_data("vm1").root))


def test_a_block_device_needs_device_true_and_then_gets_host_device(paths, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mknod of a block device needs root")
    node = tmp_path / "sdz"
    os.mknod(node, 0o600 | 0o060000, os.makedev(7, 250))  # a loop device's node
    entry = {"name": "d", "type": "raw", "file": str(node)}
    with pytest.raises(ConfigError) as info:
        parse({"storage": [entry]}, paths, tmp_path)
    assert str(info.value) == (f"storage[0].file: '{node}' is a block device; set 'device: "
                               "true' on this entry if the guest should own the whole device")
    spec = parse({"storage": [{**entry, "device": True}]}, paths, tmp_path)
    argv = build_argv(spec, runtime=paths.vm_runtime(1), data=paths.vm_data("vm1"),
                      accel="tcg")
    blockdev = json.loads(argv[argv.index("-blockdev") + 1])
    assert blockdev["file"] == {"driver": "host_device", "filename": str(node)}
    # An image file keeps its old normal form (no 'device' key): stored specs keep
    # their hash across this change.
    plain = parse({"storage": [{"name": "d", "type": "raw", "size": "1M"}]}, paths, tmp_path)
    assert "device" not in plain.data["storage"][0]


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("what", ["share", "kernel", "disk"])
def test_a_symlink_re_pointed_after_define_is_refused_at_start(what, maqet_home, tmp_path,
                                                               capsys):
    """Checked when stored, then the link is turned to /etc: start refuses (exit 2)
    and no runner or QEMU is started."""
    innocent = tmp_path / "innocent"
    link = tmp_path / "link"
    if what == "share":
        innocent.mkdir()
        raw = {"storage": [{"name": "s", "type": "virtfs", "path": str(link)}]}
        evil, where = "/etc", "storage[0].path"
    elif what == "kernel":
        innocent.write_bytes(b"kernel")
        raw = {"kernel": str(link)}
        evil, where = "/etc/shadow", "kernel"
    else:
        innocent.write_bytes(b"\0" * 512)
        raw = {"storage": [{"name": "d", "type": "raw", "file": str(link)}]}
        evil, where = "/etc/passwd", "storage[0].file"
    link.symlink_to(innocent)
    definition = tmp_path / "vm.yml"
    definition.write_text(yaml.safe_dump({"name": "vm1", "accel": "tcg", **raw}))
    assert _cli(capsys, "add", "-d", str(definition))[0] == 0
    link.unlink()
    link.symlink_to(evil)

    code, err = _cli(capsys, "start", "vm1")

    assert code == C.EXIT_USAGE and err.startswith(f"maqet: error: {where}: ")
    assert f"(really {evil})" in err and "host system directory" in err
    assert err.count("\n") == 1
    data = maqet_home / "data" / "vms" / "vm1"
    assert not (data / "qemu.log").exists() or (data / "qemu.log").stat().st_size == 0


def test_the_resolved_share_is_what_qemu_gets(maqet_home, tmp_path, capsys):
    from maqet_engine.engine import EngineContext
    from maqet_engine.engine.command_line import command_line

    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    definition = tmp_path / "vm.yml"
    definition.write_text(yaml.safe_dump(
        {"name": "vm1", "storage": [{"name": "s", "type": "virtfs", "path": str(link)}]}))
    assert _cli(capsys, "add", "-d", str(definition))[0] == 0
    ctx = EngineContext.from_env()
    with ctx.open_store(create=False) as store:
        record = store.require_vm("vm1")
    argv = command_line(record, ctx.paths, launching=True)
    fsdev = argv[argv.index("-fsdev") + 1]
    assert f"path={real}," in fsdev


def test_an_unreadable_proc_path_is_a_config_error_not_a_crash():
    """/proc/1/root/etc as an unprivileged user: EACCES is a one-line ConfigError."""
    victim = ensure_user(VICTIM)
    result = victim.python(
        "import json, pathlib\n"
        "from maqet_engine.definition import parse_spec\n"
        "from maqet_engine.errors import MaqetError\n"
        "from maqet_engine.paths import resolve_paths\n"
        "paths = resolve_paths({'MAQET_HOME': '/nonexistent/home'})\n"
        "raw = {'name': 'a', 'storage': [{'name': 's', 'type': 'virtfs',\n"
        "       'path': '/proc/1/root/etc'}]}\n"
        "try:\n"
        "    parse_spec(raw, base_dir=pathlib.Path('/'), paths=paths)\n"
        "except MaqetError as err:\n"
        "    print(json.dumps([type(err).__name__, err.exit_code, str(err)]))\n")
    assert result.returncode == 0, result.stderr
    kind, code, message = json.loads(result.stdout)
    assert (kind, code) == ("ConfigError", C.EXIT_USAGE)
    assert message.startswith("storage[0].path: '/proc/1/root/etc' cannot be accessed")
