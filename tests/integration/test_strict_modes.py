"""StrictModes: maqet refuses a home, data directory, store, VM directory or definition
file that another user controls (exit 6, one line naming the path and the fix), and
creates its own files private. Real other users (tests/support/users.py), real files,
the real CLI; no VM boots here (a refused start runs nothing)."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest
import yaml
from users import OTHER, ensure_user

from maqet_engine import constants as C
from maqet_engine.cli.main import main

pytestmark = pytest.mark.qemu


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def define(capsys, tmp_path: Path, **extra) -> Path:
    definition = tmp_path / "vm.yml"
    definition.write_text(yaml.safe_dump({"name": "vm1", "memory": "64M", "accel": "tcg",
                                          **extra}))
    code, _, err = run(capsys, "add", "-d", str(definition))
    assert code == 0, err
    return definition


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def shared_home(monkeypatch):
    """A MAQET_HOME directly in /tmp, where another user can reach it once it is 0777."""
    home = Path("/tmp") / f"maqet-strict-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("MAQET_HOME", str(home))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_a_world_writable_home_is_refused_before_anything_runs(shared_home, tmp_path, capsys):
    """The reported attack: with MAQET_HOME 0777, another user swaps data/ for a store
    whose VM binary is their script; the next root start must not run it."""
    other = ensure_user(OTHER)
    define(capsys, tmp_path)
    os.chmod(shared_home, 0o777)
    proof = shared_home / "ran-as"
    script = shared_home / "evil.sh"
    result = other.python(
        "import os, pathlib, sys\n"
        f"home = pathlib.Path({str(shared_home)!r})\n"
        f"script = pathlib.Path({str(script)!r})\n"
        f"script.write_text('#!/bin/sh\\nid -u > {proof}\\n')\n"
        "script.chmod(0o755)\n"
        "os.rename(home / 'data', home / 'data.root')\n"
        "(home / 'data').mkdir()\n"
        "from maqet_engine.store import Store\n"
        "spec = ('{\"name\": \"vm1\", \"binary\": \"%s\", \"storage\": [], \"network\": [],'\n"
        "        ' \"arguments\": [], \"accel\": \"tcg\", \"machine\": null, \"memory\": null,'\n"
        "        ' \"cpu\": null, \"cpu_model\": null, \"kernel\": null, \"initrd\": null,'\n"
        "        ' \"append\": null, \"display\": \"none\", \"vga\": \"none\", \"tags\": []}'\n"
        "        % script)\n"
        "with Store.open(home / 'data' / 'maqet.db') as store:\n"
        "    store.insert_vm('vm1', spec, 'x')\n")
    assert result.returncode == 0, result.stderr

    code, _, err = run(capsys, "start", "vm1")

    assert code == C.EXIT_HOST, err
    assert err == (f"maqet: error: maqet home {shared_home} is writable by group or others "
                   "(mode 0777); another user could change what maqet does; chmod go-w "
                   f"{shared_home}\n")
    assert not proof.exists()  # their script never ran
    # Reading stays possible (it runs nothing): root can look at what is there.
    assert run(capsys, "ls")[0] == 0


def test_a_home_of_another_user_is_refused(maqet_home, tmp_path, capsys):
    other = ensure_user(OTHER)
    define(capsys, tmp_path)
    os.chown(maqet_home, other.uid, other.gid)
    code, _, err = run(capsys, "start", "vm1")
    assert code == C.EXIT_HOST
    assert (f"maqet home {maqet_home} belongs to uid {other.uid}, neither you (uid "
            f"{os.geteuid()}) nor root" in err)
    assert f"chown {os.geteuid()} {maqet_home}, or use a MAQET_HOME of your own" in err


@pytest.mark.parametrize("target", ["data", "store", "vms", "vm"])
def test_data_store_and_vm_directories_are_checked(target, maqet_home, tmp_path, capsys):
    other = ensure_user(OTHER)
    define(capsys, tmp_path)
    data = maqet_home / "data"
    (data / "vms" / "vm1").mkdir(parents=True, exist_ok=True)
    path = {"data": data, "store": data / "maqet.db", "vms": data / "vms",
            "vm": data / "vms" / "vm1"}[target]
    if target in ("data", "store"):
        os.chmod(path, 0o666 if target == "store" else 0o770)
        expected = f"{path} is writable by group or others"
    else:
        os.chown(path, other.uid, other.gid)
        expected = f"{path} belongs to uid {other.uid}"
    code, _, err = run(capsys, "start", "vm1")
    assert code == C.EXIT_HOST and expected in err and err.count("\n") == 1
    code, _, err = run(capsys, "rm", "--purge", "vm1")  # changes are refused alike
    assert code == C.EXIT_HOST and expected in err
    assert run(capsys, "show", "vm1")[0] == 0  # reading is not


@pytest.mark.parametrize("how", ["world-writable", "other-owner", "writable-directory"])
def test_a_definition_file_another_user_controls_is_refused(how, maqet_home, tmp_path,
                                                             capsys):
    other = ensure_user(OTHER)
    directory = tmp_path / "defs"
    directory.mkdir()
    definition = directory / "vm.yml"
    definition.write_text(yaml.safe_dump({"name": "vm1"}))
    if how == "world-writable":
        os.chmod(definition, 0o666)
        expected = f"definition file {definition} is writable by group or others"
    elif how == "other-owner":
        os.chown(definition, other.uid, other.gid)
        expected = f"definition file {definition} belongs to uid {other.uid}"
    else:
        os.chmod(directory, 0o777)
        expected = f"directory of the definition file {directory} is writable"
    for command in ("add", "apply"):
        code, _, err = run(capsys, command, "-d", str(definition))
        assert code == C.EXIT_HOST and expected in err, err
    assert not maqet_home.exists()


def test_files_maqet_creates_are_private(maqet_home, tmp_path, capsys):
    """Home and data 0700, store 0600; at start the VM directory 0700 and the logs and
    disks 0600 (a QEMU that cannot start still leaves its logs)."""
    old = os.umask(0o022)  # what most shells have: created files would be 0644
    try:
        define(capsys, tmp_path, binary="/bin/false",
               storage=[{"name": "disk", "type": "qcow2", "size": "1M"}])
        assert (mode(maqet_home), mode(maqet_home / "data")) == (0o700, 0o700)
        assert mode(maqet_home / "data" / "maqet.db") == 0o600
        code, _, err = run(capsys, "start", "vm1")
        assert code == C.EXIT_RUNTIME, err  # /bin/false is no QEMU
    finally:
        os.umask(old)
    vm_dir = maqet_home / "data" / "vms" / "vm1"
    assert mode(vm_dir) == 0o700
    for name in ("runner.log", "qemu.log", "serial.log", "disk.qcow2"):
        assert mode(vm_dir / name) == 0o600, name
