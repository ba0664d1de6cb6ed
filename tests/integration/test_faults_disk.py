"""A full or read-only disk must not cost control of a VM (issue 9).

MAQET_HOME lives on a real small tmpfs (tests/support/tmpfs.py; root), so the state
store, the VM directories and the runtime directory (sockets, locks) all share one
filesystem that a test fills to a few KiB or remounts read-only. Every failure must be
one line with exit 6 that says what to do, leave no QEMU behind and lose nothing; once
space returns, every command works again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tmpfs import SmallFS, read_only_bind, small_tmpfs

from maqet_engine import constants as C
from maqet_engine import engine
from maqet_engine.errors import StateStoreError
from maqet_engine.ipc import procs
from maqet_engine.store import Store, VMStatus

FREE_KIB = (0, 16, 32, 48, 64)
STOP_BOUND_S = 5.0  # a forced stop of a healthy runner: ~0.1 s here (docs/runner.md)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallFS]:
    """MAQET_HOME on an 8 MiB tmpfs of its own, unmounted after the test."""
    with small_tmpfs("8m") as fs:
        monkeypatch.setenv("MAQET_HOME", str(fs.root / "home"))
        yield fs


@pytest.fixture
def maqet_home(disk: SmallFS) -> Path:
    """The home ``vms`` uses: on the tmpfs (set up first, so unmounted last)."""
    return disk.root / "home"


def maqet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maqet_engine", *args], capture_output=True,
                          text=True, timeout=120, env=os.environ.copy(), check=False)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command failed with ``code`` and exactly one line on stderr, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maqet: error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def write_definition(directory: Path, data: dict[str, Any]) -> str:
    path = directory / f"{data['name']}-{len(list(directory.iterdir()))}.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def store_contents(home: Path) -> tuple[list[tuple[Any, ...]], int, str]:
    """What the store holds (VM rows, number of events) and its integrity check, read
    with plain sqlite3 (space must be back)."""
    db = sqlite3.connect(home / "data" / C.DB_FILE)
    try:
        rows = db.execute("SELECT name, spec_hash, status FROM vms ORDER BY name").fetchall()
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        return rows, events, db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def status_of(name: str) -> dict[str, Any]:
    proc = maqet("--json", "status", name)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# --- definitions: no QEMU needed ------------------------------------------------------
@pytest.mark.parametrize("free_kib", FREE_KIB)
@pytest.mark.parametrize("verb", ["add", "apply"])
def test_definitions_on_a_full_disk_fail_in_one_line_and_change_nothing(
        disk, tmp_path, verb, free_kib):
    home = disk.root / "home"
    assert maqet("add", "-d", write_definition(tmp_path, {"name": "a"})).returncode == 0
    # add: a new VM; apply: a changed definition of "a". Big enough to need new pages.
    tags = [f"tag{i:03d}-" + "x" * 50 for i in range(300)]
    wanted = write_definition(tmp_path, {"name": "b" if verb == "add" else "a",
                                         "memory": "128M", "tags": tags})
    before = store_contents(home)
    disk.set_free(free_kib)

    proc = maqet(verb, "-d", wanted)
    if proc.returncode != 0 or free_kib == 0:  # 0 KiB free: nothing can be written
        one_line_error(proc, C.EXIT_HOST, "disk is full", "free space")
    listing = maqet("ls")  # reading works on the full disk
    assert listing.returncode == 0 and listing.stdout.splitlines()[1].startswith("a "), listing

    disk.unfill()
    after = store_contents(home)
    assert after[2] == "ok"
    if proc.returncode != 0:
        assert after == before  # nothing half-written
    else:
        assert len(after[0]) == (2 if verb == "add" else 1) and after[0] != before[0]
    again = maqet(verb, "-d", wanted)  # space is back: it works
    assert again.returncode == 0, again.stderr
    assert store_contents(home)[0] != before[0]


def test_a_read_only_home_reads_and_refuses_changes_in_one_line(disk, tmp_path):
    home = disk.root / "home"
    assert maqet("add", "-d", write_definition(tmp_path, {"name": "a"})).returncode == 0
    before = store_contents(home)
    other = write_definition(tmp_path, {"name": "b"})
    runner_log = home / "data" / "vms" / "a" / C.RUNNER_LOG
    runner_log.parent.mkdir(parents=True)
    runner_log.write_text("hello from the runner\n")
    with disk.read_only():
        logs = maqet("logs", "a", "--runner")
        assert logs.returncode == 0 and "hello from the runner" in logs.stdout, logs.stderr
        assert follow_prints(("logs", "a", "--runner", "-f"), "hello from the runner")
        one_line_error(maqet("logs", "a", "--qemu", "-f"), C.EXIT_HOST,
                       "cannot create the log to follow", "read-only")
        listing = maqet("ls")
        assert listing.returncode == 0 and "a " in listing.stdout, listing.stderr
        shown = maqet("show", "a")
        assert shown.returncode == 0 and "defined" in shown.stdout, shown.stderr
        assert status_of("a")["status"] == "defined"
        for args in (("add", "-d", other), ("start", "a"), ("apply", "--name", "a",
                                                              "--state", "running"),
                     ("rm", "a")):
            one_line_error(maqet(*args), C.EXIT_HOST, "read-only", "remount it read-write")
        assert not procs_of(home)
    assert store_contents(home) == before
    assert maqet("add", "-d", other).returncode == 0


def follow_prints(args: tuple[str, ...], text: str, timeout: float = 30) -> bool:
    """``maqet ARGS`` (a follow that never ends by itself) prints ``text``: read its
    stdout (select on the pipe, bounded), then kill it by PID."""
    import select

    proc = subprocess.Popen([sys.executable, "-m", "maqet_engine", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ.copy())
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while text.encode() not in seen and time.monotonic() < deadline:
            if not select.select([proc.stdout], [], [], deadline - time.monotonic())[0]:
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    finally:
        proc.kill()
        proc.wait()
    return text.encode() in seen


def procs_of(home: Path) -> list[int]:
    from procs import pids_mentioning

    return pids_mentioning(home)


def test_a_runner_whose_log_cannot_be_opened_reports_it_through_the_pipe(disk, tmp_path):
    """The runner's own log (logging's file handler) on a read-only VM directory: it
    cannot log, so it says why on its ready pipe (exit 6) instead of dying with a
    traceback nobody sees."""
    paths = engine.EngineContext.from_env().paths
    with Store.open(paths.db) as store:
        store.insert_vm("a", "{}", "h")
    vm_dir = paths.vm_data("a").root
    vm_dir.mkdir(parents=True)
    read_fd, write_fd = os.pipe()
    with read_only_bind(vm_dir):
        proc = subprocess.run(
            [sys.executable, "-m", C.RUNNER_MODULE, "--name", "a", "--ready-fd",
             str(write_fd), "--data", str(paths.data), "--runtime", str(paths.runtime)],
            pass_fds=(write_fd,), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=60, check=False)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = json.loads(pipe.readline())
    assert proc.returncode == C.EXIT_HOST, proc.stderr
    assert message["ok"] is False and message["error"]["type"] == "HostError"
    assert "cannot open the runner log" in message["error"]["message"]
    assert "read-only" in message["error"]["message"]
    assert "Traceback" not in proc.stderr


# --- with QEMU ---------------------------------------------------------------------------
@pytest.mark.qemu
@pytest.mark.parametrize("where", ["runtime dir", "vm dir", "qemu.log"])
def test_read_only_places_of_a_start_are_one_line_and_leave_no_qemu(vms, where):
    """Each place a start creates or opens a file, read-only on its own (a read-only
    bind mount): the state store stays writable, so the start gets that far."""
    name = vms.define(with_guest=False)
    record = vms.record(name)
    data = vms.paths.vm_data(name)
    if where == "runtime dir":
        target, words = vms.paths.runtime, ("cannot create the runtime directory",)
        target.mkdir(parents=True)
    elif where == "vm dir":
        target, words = data.root, ("cannot open the runner log", str(data.runner_log))
        target.mkdir(parents=True)
    else:
        target, words = data.qemu_log, ("cannot open QEMU's log", str(data.qemu_log))
        target.parent.mkdir(parents=True)
        target.touch()
    with read_only_bind(target):
        one_line_error(maqet("start", name), C.EXIT_HOST, *words, "read-only")
        assert not vms.our_pids()
    assert vms.record(name).status == VMStatus.DEFINED and record.qemu_pid is None
    started = maqet("start", name)  # writable again
    assert started.returncode == 0, started.stderr
    assert maqet("stop", "--force", name).returncode == 0


@pytest.mark.qemu
@pytest.mark.parametrize("free_kib", FREE_KIB)
def test_start_on_a_full_disk_leaves_no_qemu_behind(vms, disk, free_kib):
    name = vms.define()
    disk.set_free(free_kib)
    proc = maqet("start", name)
    if proc.returncode != 0 or free_kib == 0:
        line = one_line_error(proc, C.EXIT_HOST, "free space")
        assert "disk is full" in line or "No space left on device" in line, line
        assert not vms.our_pids()  # the runner killed the QEMU it launched, and exited
        view = status_of(name)  # readable on the full disk, and not "running"
        assert view["status"] in ("defined", "stopped", "crashed"), view
        assert not view["runner_alive"] and not view["qemu_alive"]
    disk.unfill()
    started = maqet("start", name)
    assert started.returncode == 0, started.stderr
    assert status_of(name)["status"] == "running"
    stopped = maqet("stop", "--force", name)
    assert stopped.returncode == 0, stopped.stderr
    assert status_of(name)["status"] == "stopped" and not vms.our_pids()


@pytest.mark.qemu
def test_a_store_failure_after_launch_kills_the_qemu_it_launched(vms, disk):
    """The runner's start in phases: QEMU launched and "starting" recorded, then the
    disk fills before ``_post_launch`` records "running". That write fails, and the
    start must be undone: no QEMU left, the error a StateStoreError.

    The runner runs in this process so that the disk can fill at exactly that point:
    a subclass fills it on entering ``_post_launch`` (a seam, not a mock: QEMU, the
    store and the full tmpfs are real)."""
    import asyncio
    import logging

    from maqet_engine.control.spawn import bind_qmp_socket
    from maqet_engine.engine.command_line import command_line
    from maqet_engine.runner.vm import Launch, SupervisedVM

    name = vms.define()
    record = vms.record(name)
    runtime = vms.paths.ensure_runtime(record.id)
    listener = bind_qmp_socket(runtime.qmp_socket)
    argv = command_line(record, vms.paths, qmp_fd=listener.fileno())
    launch = Launch(argv=argv, qmp_fd=listener.detach(), agent_fd=None)  # the runner closes it

    class DiskFillsAfterLaunch(SupervisedVM):
        async def _post_launch(self) -> dict[str, Any]:
            disk.set_free(0)
            return await super()._post_launch()

    launched: list[SupervisedVM] = []

    async def start() -> None:
        with Store.open(vms.paths.db, create=False) as store:
            vm = DiskFillsAfterLaunch(name, vms.paths, store, logging.getLogger("test"),
                                      launch=launch)
            launched.append(vm)
            try:
                await vm.start()
            finally:
                await vm.close()

    with pytest.raises(StateStoreError, match="disk is full.*free space"):
        asyncio.run(start())
    (vm,) = launched
    assert vm.proc is not None and not procs.is_alive(vm.proc.pid, vm.proc.started)
    assert not vms.our_pids()
    view = engine.status(vms.ctx(), name).data  # "starting" was recorded: shown crashed
    assert view["status"] == "crashed" and "gone without recording" in view["reason"]
    disk.unfill()
    assert [a["action"] for a in engine.start(vms.ctx(), name).actions] == ["start"]
    engine.stop(vms.ctx(), name, force=True)


@pytest.mark.qemu
def test_a_running_vm_whose_disk_fills_stays_controllable(vms, disk):
    from guest import wait_marker

    name = vms.define()
    assert maqet("start", name).returncode == 0
    wait_marker(vms.paths, name)
    record = vms.record(name)
    disk.set_free(0)

    # Reading and driving the VM still work ...
    assert status_of(name)["status"] == "running"
    query = maqet("qmp", name, "query-status")
    assert query.returncode == 0 and json.loads(query.stdout)["status"] == "running"
    # ... and a forced stop stops QEMU at once, even though it cannot be recorded.
    started = time.monotonic()
    stopped = maqet("stop", "--force", name)
    elapsed = time.monotonic() - started
    one_line_error(stopped, C.EXIT_HOST, f"VM '{name}' did stop", "cannot record it",
                   "free space")
    assert elapsed < STOP_BOUND_S, elapsed
    assert not procs.is_alive(record.qemu_pid, record.qemu_start) and not vms.our_pids()
    view = status_of(name)  # not "running" forever: what is true, with the reason
    assert view["status"] == "crashed" and not view["qemu_alive"], view
    assert "gone without recording an exit" in view["reason"]
    disk.set_free(0)  # (the last store connection's checkpoint freed its WAL)
    again = maqet("stop", "--force", name)  # nothing cached: the same clear answer
    assert again.returncode == C.EXIT_HOST and "free space" in again.stderr, again.stderr

    disk.unfill()
    assert maqet("stop", name).returncode == 0  # records the crash; nothing to stop
    assert status_of(name)["status"] == "crashed"
    restarted = maqet("start", name)
    assert restarted.returncode == 0, restarted.stderr
    wait_marker(vms.paths, name)
    graceful = maqet("stop", name)
    assert graceful.returncode == 0 and "ACPI powerdown" in graceful.stdout, graceful
    assert status_of(name)["status"] == "stopped" and not vms.our_pids()


@pytest.mark.qemu
def test_a_vm_whose_runner_died_is_readopted_and_stopped_on_a_full_disk(vms, disk):
    """Re-adoption must not need the disk (the VM runs already; a runner is what makes
    it controllable); what it could not record is written with the next record that
    fits, once space is back."""
    from procs import wait_pid_exit

    name = vms.define()
    assert maqet("start", name).returncode == 0
    first = vms.record(name)
    os.kill(first.runner_pid, 9)
    assert wait_pid_exit(first.runner_pid)
    disk.set_free(0)

    query = maqet("qmp", name, "query-status")  # re-adopts, on the full disk
    assert query.returncode == 0 and json.loads(query.stdout)["status"] == "running", query
    adopter = status_of(name)["runner_pid"]
    assert adopter != first.runner_pid and vms.record(name).runner_pid == first.runner_pid
    disk.unfill()
    assert maqet("pause", name).returncode == 0  # the next record carries what was missed
    caught_up = vms.record(name)
    assert (caught_up.status, caught_up.runner_pid) == (VMStatus.PAUSED, adopter)

    disk.set_free(0)
    stopped = maqet("stop", name)  # polite: a paused guest gets QMP quit
    one_line_error(stopped, C.EXIT_HOST, f"VM '{name}' did stop", "free space")
    assert not procs.is_alive(first.qemu_pid, first.qemu_start) and not vms.our_pids()
    disk.unfill()
    assert maqet("start", name).returncode == 0
    assert maqet("stop", "--force", name).returncode == 0
