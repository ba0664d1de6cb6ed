"""The runtime directory: never a symlink, never another user's, always 0700 — also
when it sits at a predictable name in /tmp that another local user created first."""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest
from users import OTHER, VICTIM, ensure_user

from maqet_engine import constants as C
from maqet_engine.errors import UnsafePath
from maqet_engine.paths import Paths, resolve_paths


@pytest.fixture
def scratch():
    """A fresh directory directly in /tmp (other users cannot reach pytest's 0700
    tmp_path), removed afterwards."""
    made: list[Path] = []

    def make(prefix: str) -> Path:
        path = Path("/tmp") / f"{prefix}-{uuid.uuid4().hex[:10]}"
        made.append(path)
        return path

    yield make
    for path in made:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)


def _paths_with_runtime(runtime: Path, tmp_path: Path) -> Paths:
    return Paths.of(data=tmp_path / "data", runtime=runtime, config=tmp_path / "config")


def test_root_without_xdg_runtime_dir_uses_run_not_tmp(tmp_path):
    """sudo, cron and Ansible become give root no XDG_RUNTIME_DIR: its runtime root
    goes to /run, where no other user can create a name first."""
    if os.geteuid() != 0:
        pytest.skip("root's default")
    env = {"HOME": str(tmp_path)}
    assert resolve_paths(env).runtime == Path("/run/maqet")
    deep = tmp_path / ("d" * 90)
    short = resolve_paths({**env, C.ENV_HOME: str(deep)}).runtime
    assert short.parent == Path("/run") and short.name.startswith("maqet-0-")


def test_a_planted_symlink_is_refused_and_its_target_untouched(scratch, tmp_path):
    """Another user points the runtime root's predictable name at a directory of theirs:
    root refuses it, and neither chmods the target nor puts anything in it."""
    other = ensure_user(OTHER)
    target, runtime = scratch("theirs"), scratch("maqet-0")
    other.run(["mkdir", "-m", "0755", str(target)], check=True)
    other.run(["ln", "-s", str(target), str(runtime)], check=True)
    paths = _paths_with_runtime(runtime, tmp_path)

    with pytest.raises(UnsafePath) as info:
        paths.ensure_runtime(7)

    message = str(info.value)
    assert f"runtime directory {runtime} is a symlink" in message and "\n" not in message
    assert info.value.exit_code == C.EXIT_HOST
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert list(target.iterdir()) == []


def test_a_directory_of_another_user_is_refused(scratch, tmp_path):
    other = ensure_user(OTHER)
    runtime = scratch("maqet-0")
    other.run(["mkdir", "-m", "0700", str(runtime)], check=True)
    with pytest.raises(UnsafePath, match=f"owned by uid {other.uid}, not by you"):
        _paths_with_runtime(runtime, tmp_path).ensure_runtime(1)
    assert runtime.stat().st_uid == other.uid and list(runtime.iterdir()) == []


def test_a_vm_directory_planted_inside_is_refused_too(tmp_path):
    other = ensure_user(OTHER)
    paths = _paths_with_runtime(tmp_path / "run", tmp_path)
    paths.ensure_runtime(1)
    (paths.runtime / "2").symlink_to(tmp_path)
    with pytest.raises(UnsafePath, match="is a symlink"):
        paths.ensure_runtime(2)
    os.chown(paths.runtime / "1", other.uid, other.gid)
    with pytest.raises(UnsafePath, match="owned by uid"):
        paths.ensure_runtime(1)


def test_own_directories_are_made_private_but_a_writable_one_is_refused(tmp_path):
    paths = _paths_with_runtime(tmp_path / "run", tmp_path)
    paths.runtime.mkdir(mode=0o755)
    os.chmod(paths.runtime, 0o755)
    rt = paths.ensure_runtime(3)
    assert stat.S_IMODE(paths.runtime.stat().st_mode) == 0o700
    assert stat.S_IMODE(rt.root.stat().st_mode) == 0o700
    os.chmod(rt.root, 0o777)  # anyone may have put anything in it meanwhile
    with pytest.raises(UnsafePath, match=r"writable by group or others \(mode 0777\)"):
        paths.ensure_runtime(3)


def test_an_unprivileged_users_default_tmp_runtime_cannot_be_hijacked(scratch):
    """Without XDG_RUNTIME_DIR a user's runtime root is /tmp/maqet-UID: another user
    who made it first (here a symlink to their own directory) is refused."""
    victim, other = ensure_user(VICTIM), ensure_user(OTHER)
    planted = Path(f"/tmp/maqet-{victim.uid}")
    if planted.exists() or planted.is_symlink():
        pytest.skip(f"{planted} exists already")
    target = scratch("theirs")
    other.run(["mkdir", "-m", "0755", str(target)], check=True)
    other.run(["ln", "-s", str(target), str(planted)], check=True)
    try:
        result = victim.python(
            "import json\n"
            "from maqet_engine.paths import resolve_paths\n"
            "from maqet_engine.errors import MaqetError\n"
            "paths = resolve_paths({'HOME': '/nonexistent'})\n"
            "try:\n"
            "    paths.ensure_runtime(1)\n"
            "except MaqetError as err:\n"
            "    print(json.dumps([str(paths.runtime), type(err).__name__, str(err)]))\n")
    finally:
        planted.unlink()
    assert result.returncode == 0, result.stderr
    runtime, kind, message = json.loads(result.stdout)
    assert (runtime, kind) == (str(planted), "UnsafePath")
    assert "is a symlink" in message
    assert stat.S_IMODE(target.stat().st_mode) == 0o755 and list(target.iterdir()) == []
