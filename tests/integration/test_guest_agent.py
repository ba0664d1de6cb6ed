"""Into the guest without a network (issue 11): the ssh guest booted by maqet with
``agent: true`` and no NIC at all (``-nodefaults``, no ``network``), reached only through
qemu-ga on the channel the runner owns. The facade and the real CLI, against real QEMU.

Boots under TCG (~3 s each here): one VM shared by the non-destructive tests of this
module, and a VM of their own for the tests that break the agent (hung, killed, a guest
reboot) or have none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import guest
import pytest

from maqet_engine import constants as C
from maqet_engine import engine
from maqet_engine.errors import AgentUnavailable, OperationTimeout, StateConflict
from maqet_engine.paths import resolve_paths

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 120.0  # to qemu-ga answering: ~3 s under TCG here
AGENT_TIMEOUT = 60.0  # generous for a loaded CI host: the agent answers in ~10 ms
CLI_TIMEOUT = 300.0  # one maqet command (a 17 MB output takes ~8 s)
REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def definition(name: str, *, reboot: bool = False) -> dict[str, Any]:
    data = guest.agent_guest_definition(name, reboot=reboot)
    assert "network" not in data
    return data


class Home:
    """A MAQET_HOME with its engine context, the CLI, and the cleanup of its VMs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.paths = resolve_paths({"MAQET_HOME": str(path)})
        self.ctx = engine.EngineContext.for_home(str(path))

    def start(self, data: dict[str, Any]) -> str:
        spec = engine.load_definition(self.ctx, definition=data)
        engine.apply(self.ctx, spec=spec, state="running")
        return spec.name

    def maqet(self, *args: str, stdin: bytes | None = None,
              timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "MAQET_HOME": str(self.path), "LC_ALL": "C.UTF-8",
               "PYTHONPATH": str(REPO)}
        return subprocess.run([sys.executable, "-m", "maqet_engine", *args], env=env,
                              input=stdin if stdin is not None else b"",
                              capture_output=True, timeout=timeout, check=False)

    def cleanup(self) -> None:
        from procs import kill_mentioning

        with contextlib.suppress(Exception):
            for vm in engine.list_vms(self.ctx).data:
                engine.apply(self.ctx, name=vm["name"], state="absent", force=True, timeout=5)
        kill_mentioning(self.paths.runtime, self.paths.data)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, str]]:
    """One running VM for the tests that leave its agent as they found it."""
    home = Home(tmp_path_factory.mktemp("agent") / "home")
    try:
        name = home.start(definition("ag1"))
        engine.guest_exec(home.ctx, name, ["true"], agent_timeout=BOOT_TIMEOUT)
        yield home, name
    finally:
        home.cleanup()


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Home]:
    home = Home(tmp_path / "home")
    try:
        yield home
    finally:
        home.cleanup()


def run(home: Home, name: str, *argv: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("agent_timeout", AGENT_TIMEOUT)
    return engine.guest_exec(home.ctx, name, list(argv), **kwargs).data


# --- exec -------------------------------------------------------------------------------------
def test_exec_status_output_stdin_env_cwd_and_signals(shared):
    home, name = shared
    done = run(home, name, "uname", "-sr")
    assert done["exitcode"] == 0 and done["stdout"].startswith(b"Linux 6.1")
    assert done["stderr"] == b"" and done["signal"] is None
    failed = run(home, name, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (failed["exitcode"], failed["stdout"], failed["stderr"]) == (3, b"out\n", b"err\n")
    binary = bytes(range(256)) * 3
    echoed = run(home, name, "cat", stdin=binary)
    assert echoed["stdout"] == binary  # binary safe both ways
    where = run(home, name, "sh", "-c", 'pwd; printf "%s|" "$GREETING" "$EMPTY"',
                env={"GREETING": "hello world", "EMPTY": ""}, cwd="/etc")
    assert where["stdout"] == b"/etc\nhello world||"
    killed = run(home, name, "sh", "-c", "kill -TERM $$")
    assert killed["exitcode"] is None and killed["signal"] == signal.SIGTERM
    missing = run(home, name, "sh", "-c", "cd /nonexistent", cwd="/nonexistent")
    assert missing["exitcode"] == 126  # the wrapper's "cannot cd"


def test_exec_one_mib_of_output(shared):
    home, name = shared
    big = run(home, name, "sh", "-c", "head -c 1048576 /dev/urandom | tee /tmp/big | "
              "sha256sum >&2; cat /tmp/big")
    assert len(big["stdout"]) == MiB and not big["stdout_truncated"]
    assert big["stderr"].split()[0].decode() == hashlib.sha256(big["stdout"]).hexdigest()


def test_exec_output_over_the_agents_cap_is_reported_cut(shared):
    """qemu-ga 7.2 keeps 16 MiB of a command's output: maqet says so, never silently."""
    home, name = shared
    over = home.maqet("exec", name, "--", "sh", "-c", "head -c 17000000 /dev/zero; exit 4")
    assert over.returncode == 4, over.stderr
    assert len(over.stdout) == C.AGENT_EXEC_OUTPUT_CAP
    assert b"kept only the first 16 MiB of the command's stdout" in over.stderr


def test_exec_cli(shared):
    home, name = shared
    ok = home.maqet("exec", name, "--env", "A=1", "--cwd", "/tmp", "--",
                    "sh", "-c", 'echo "$A $(pwd)"; cat; exit 7', stdin=b"piped\n")
    assert (ok.returncode, ok.stdout, ok.stderr) == (7, b"1 /tmp\npiped\n", b"")
    quiet = home.maqet("exec", "-n", name, "--", "cat", stdin=b"never sent")
    assert (quiet.returncode, quiet.stdout) == (0, b"")
    as_json = home.maqet("--json", "exec", name, "--", "echo", "hi")
    assert as_json.returncode == 0
    import json

    data = json.loads(as_json.stdout)
    assert data["stdout"] == "hi\n" and data["exitcode"] == 0
    nothing = home.maqet("exec", name)
    assert nothing.returncode == C.EXIT_USAGE and b"after --" in nothing.stderr


def test_exec_timeout_bounds_the_command(shared):
    home, name = shared
    started = time.monotonic()
    with pytest.raises(OperationTimeout, match=r"still runs in the guest \(pid \d+\)"):
        run(home, name, "sleep", "30", timeout=1)
    assert time.monotonic() - started < 10


# --- files ------------------------------------------------------------------------------------
def test_cp_in_and_out_binary_with_mode_and_checksum(shared, tmp_path: Path):
    home, name = shared
    data = os.urandom(5 * MiB + 123)
    source = tmp_path / "blob.bin"
    source.write_bytes(data)
    source.chmod(0o751)
    put = home.maqet("cp", str(source), f"{name}:/tmp/")
    assert put.returncode == 0, put.stderr
    assert re.search(rb"^ag1:/tmp/blob\.bin: 5\.0M in .* mode 0751, sha256 verified "
                     rb"\(sha256sum\)$", put.stdout, re.MULTILINE), put.stdout
    listed = run(home, name, "sh", "-c", 'stat -c %a /tmp/blob.bin; sha256sum < /tmp/blob.bin')
    assert listed["stdout"].split()[:2] == [b"751", hashlib.sha256(data).hexdigest().encode()]
    back = tmp_path / "back"
    back.mkdir()
    got = home.maqet("cp", f"{name}:/tmp/blob.bin", str(back))
    assert got.returncode == 0, got.stderr
    assert (back / "blob.bin").read_bytes() == data
    assert (back / "blob.bin").stat().st_mode & 0o777 == 0o751
    assert b"sha256 verified" in got.stdout


def test_cp_through_the_facade_empty_file_and_errors(shared, tmp_path: Path):
    home, name = shared
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    put = engine.put_file(home.ctx, name, empty, "/tmp/empty", agent_timeout=AGENT_TIMEOUT)
    assert put.actions[0]["size"] == 0 and put.actions[0]["verified"] == "sha256sum"
    got = engine.fetch_file(home.ctx, name, "/tmp/empty", tmp_path / "empty.back",
                            agent_timeout=AGENT_TIMEOUT)
    assert (tmp_path / "empty.back").read_bytes() == b"" and got.changed
    missing = home.maqet("cp", f"{name}:/nonexistent", str(tmp_path / "x"))
    assert missing.returncode == C.EXIT_RUNTIME
    assert b"guest agent: guest-file-open failed" in missing.stderr
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))
    both_local = home.maqet("cp", str(empty), str(tmp_path / "y"))
    assert both_local.returncode == C.EXIT_USAGE


# --- facts and status -------------------------------------------------------------------------
def test_guest_info_without_a_network(shared):
    home, name = shared
    info = engine.guest_info(home.ctx, name, agent_timeout=AGENT_TIMEOUT).data
    assert info["os"]["id"] == "debian" and info["os"]["version-id"] == "12"
    assert info["hostname"] == "maqet-ssh-guest"
    assert [i["name"] for i in info["interfaces"]] == ["lo"]  # no NIC at all
    assert info["interfaces"][0]["ipv4"] == ["127.0.0.1"]
    assert info["agent"]["version"].startswith("7.2")
    assert engine.guest_interfaces(home.ctx, name).data == info["interfaces"]
    cli = home.maqet("guest-info", name)
    assert cli.returncode == 0
    assert re.search(rb"^os +Debian GNU/Linux 12 \(bookworm\)$", cli.stdout, re.MULTILINE)
    assert re.search(rb"^interface lo +127\.0\.0\.1/8 ::1/128$", cli.stdout, re.MULTILINE)


def test_status_shows_the_agent(shared):
    home, name = shared
    agent = engine.status(home.ctx, name).data["agent"]
    assert agent["state"] == "connected" and agent["last_sync"] <= time.time()
    cli = home.maqet("status", name)
    assert re.search(rb"^agent +connected \(synced \d\d:\d\d:\d\d\)$", cli.stdout,
                     re.MULTILINE), cli.stdout
    # An agent that answers satisfies a wait at once, with its version.
    version = engine.guest_info(home.ctx, name).data["agent"]["version"]
    assert engine.wait_agent(home.ctx, name, timeout=AGENT_TIMEOUT).data == {"version": version}
    cli = home.maqet("wait", name, "--agent")
    assert (cli.returncode, cli.stdout.decode()) == (
        0, f"{name}: guest agent answers (qemu-ga {version})\n"), cli.stderr


def test_a_hung_agent_is_an_error_within_the_timeout_and_recovers(shared):
    """qemu-ga stopped (SIGSTOP) for 8 s: a call fails within its 1 s agent timeout,
    exit 7 from the CLI; once it runs again the next call syncs and works."""
    home, name = shared
    # In the background, once this command was answered: stop qemu-ga (its parent), say
    # so on the console, let it go on 8 s later.
    run(home, name, "sh", "-c", "(sleep 0.2; kill -STOP $PPID; echo AGENT-STOPPED-$((6*7)) "
        ">/dev/ttyS0; sleep 8; kill -CONT $PPID) >/dev/null 2>&1 </dev/null &")
    guest.wait_console(home.paths, name, "AGENT-STOPPED-42", timeout=AGENT_TIMEOUT)
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="did not answer guest-exec"):
        run(home, name, "true", agent_timeout=1)
    assert time.monotonic() - started < 3
    hung = home.maqet("exec", "--agent-timeout", "1", name, "--", "true")
    assert hung.returncode == C.EXIT_AGENT, hung.stderr
    assert b"maqet: error: the guest agent did not answer" in hung.stderr
    assert run(home, name, "echo", "back")["stdout"] == b"back\n"  # waits, re-syncs


def test_a_new_runner_re_adopts_the_agent_channel(shared):
    """The runner dies (QEMU lives): the next call re-adopts QEMU, and the new runner
    connects to the same agent socket, not knowing whether the port is open: it syncs."""
    home, name = shared
    from procs import wait_pid_exit

    runner = engine.status(home.ctx, name).data["runner_pid"]
    os.kill(runner, signal.SIGKILL)
    wait_pid_exit(runner, 10)
    assert run(home, name, "echo", "adopted")["stdout"] == b"adopted\n"
    status = engine.status(home.ctx, name).data
    assert status["runner_pid"] != runner and status["adopted"]
    assert status["agent"]["state"] == "connected"


# --- the console ------------------------------------------------------------------------------
def _read_until(fd: int, pattern: bytes, timeout: float = 60.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while pattern not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{pattern!r} not seen; got {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side closed
                chunk = b""
            assert chunk, f"EOF before {pattern!r}; got {seen[-2000:]!r}"
            seen += chunk
    return seen


def _console(home: Home, name: str, *extra: str) -> tuple[int, int]:
    """``maqet console NAME`` on a real pty: (pid, master fd)."""
    env = {**os.environ, "MAQET_HOME": str(home.path), "LC_ALL": "C.UTF-8",
           "PYTHONPATH": str(REPO), "TERM": "dumb"}
    pid, master = pty.fork()
    if pid == 0:  # the child: the real CLI on the pty
        os.execve(sys.executable, [sys.executable, "-m", "maqet_engine", "console", *extra,
                                   name], env)
    return pid, master


def test_console_on_a_pty_types_reads_and_detaches(shared):
    home, name = shared
    typist, typist_fd = _console(home, name)
    watcher, watcher_fd = 0, -1
    try:
        _read_until(typist_fd, b"(typing); Ctrl-] detaches")
        watcher, watcher_fd = _console(home, name)
        _read_until(watcher_fd, b"is typing); Ctrl-] detaches")  # the second reads only
        os.write(typist_fd, b"\recho hel''lo-$((6*7))\r")
        _read_until(typist_fd, b"hello-42")  # the guest's answer, on both terminals
        _read_until(watcher_fd, b"hello-42")
        os.write(watcher_fd, b"echo never-typed\r")  # a read-only viewer's keys go nowhere
        os.write(typist_fd, b"echo done-$((1+1))\r")
        seen = _read_until(watcher_fd, b"done-2")
        assert b"never-typed" not in seen
        os.write(typist_fd, b"\x1d")  # Ctrl-]
        _read_until(typist_fd, b"maqet: detached")
        _, status = os.waitpid(typist, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        typist = 0
    finally:
        for pid in (typist, watcher):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        for fd in (typist_fd, watcher_fd):
            if fd >= 0:
                os.close(fd)


# --- VMs of their own -------------------------------------------------------------------------
def test_a_vm_without_the_agent_channel_fails_at_once_with_exit_7(own: Home):
    name = own.start({"name": "plain", "accel": guest.test_accel(), "memory": "64M"})
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="has no guest agent channel"):
        engine.guest_exec(own.ctx, name, ["true"], agent_timeout=30)
    assert time.monotonic() - started < 5
    cli = own.maqet("exec", name, "--", "true")
    assert cli.returncode == C.EXIT_AGENT
    assert b"set 'agent: true' in its definition" in cli.stderr
    # The definition gets the channel while the VM runs: it needs a restart, and says so.
    spec = engine.load_definition(own.ctx, definition={
        "name": "plain", "accel": guest.test_accel(), "memory": "64M", "agent": True})
    assert engine.apply(own.ctx, spec=spec, state="running").restart_required
    with pytest.raises(AgentUnavailable, match="runs the one from before"):
        engine.guest_exec(own.ctx, name, ["true"], agent_timeout=30)
    # Waiting for an agent that has no channel ends at once too, not after the timeout.
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="runs the one from before"):
        engine.wait_agent(own.ctx, name, timeout=60)
    assert time.monotonic() - started < 5
    cli = own.maqet("wait", name, "--agent", "--timeout", "60")
    assert cli.returncode == C.EXIT_AGENT and b"has no guest agent channel" in cli.stderr
    engine.stop(own.ctx, name)
    with pytest.raises(StateConflict, match="is stopped"):
        engine.wait_agent(own.ctx, name, timeout=60)


def test_no_agent_in_the_guest_is_an_error_within_the_timeout(own: Home):
    """The channel exists but nothing in the guest opens it (firmware only: no OS)."""
    name = own.start({"name": "noga", "accel": guest.test_accel(), "memory": "64M",
                      "agent": True})
    assert engine.status(own.ctx, name).data["agent"]["state"] == "absent"
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="qemu-ga is not running in the guest"):
        engine.guest_exec(own.ctx, name, ["true"], agent_timeout=2)
    assert 2 <= time.monotonic() - started < 6
    cli = own.maqet("guest-info", "--agent-timeout", "1", name)
    assert cli.returncode == C.EXIT_AGENT and b"not running in the guest" in cli.stderr
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="qemu-ga is not running in the guest"):
        engine.wait_agent(own.ctx, name, timeout=2)
    assert 2 <= time.monotonic() - started < 6
    cli = own.maqet("wait", name, "--agent", "--timeout", "1")
    assert cli.returncode == C.EXIT_AGENT and b"not running in the guest" in cli.stderr


def test_a_guest_reboot_resyncs_and_a_killed_agent_is_reported(own: Home):
    name = own.start(definition("reboot1", reboot=True))
    first = run(own, name, "cat", "/proc/sys/kernel/random/boot_id",
                agent_timeout=BOOT_TIMEOUT)["stdout"]
    synced = engine.status(own.ctx, name).data["agent"]["last_sync"]
    # The reboot takes qemu-ga down before it can report the command's end: the guest
    # closes the port (QMP VSERPORT_CHANGE), which fails the call at once.
    with pytest.raises(AgentUnavailable, match="closed its port|restarted while"):
        run(own, name, "reboot", "-f")
    # The next call waits for the new boot's qemu-ga to open the port, syncs, runs.
    second = run(own, name, "cat", "/proc/sys/kernel/random/boot_id",
                 agent_timeout=BOOT_TIMEOUT)["stdout"]
    assert second != first  # another boot
    status = engine.status(own.ctx, name).data
    assert status["status"] == "running" and status["agent"]["last_sync"] > synced
    # maqet wait --agent across a reboot: it returns once the next boot's agent answers.
    with pytest.raises(AgentUnavailable, match="closed its port|restarted while"):
        run(own, name, "reboot", "-f")
    cli = own.maqet("--json", "wait", name, "--agent", "--timeout", str(BOOT_TIMEOUT))
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["agent"]["version"]
    third = run(own, name, "cat", "/proc/sys/kernel/random/boot_id")["stdout"]
    assert third not in (first, second)
    # Stop qemu-ga for good: its respawn loop (its parent), then itself ($PPID of the
    # command it runs). It cannot report this command's end either.
    with pytest.raises(AgentUnavailable, match="closed its port|restarted while"):
        run(own, name, "sh", "-c", "kill $(cut -d' ' -f4 /proc/$PPID/stat); kill $PPID")
    assert engine.status(own.ctx, name).data["agent"]["state"] == "absent"
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="qemu-ga is not running in the guest"):
        run(own, name, "true", agent_timeout=2)
    assert time.monotonic() - started < 6
    cli = own.maqet("status", name)
    assert re.search(rb"^agent +absent .*the guest closed the agent's port", cli.stdout,
                     re.MULTILINE), cli.stdout
