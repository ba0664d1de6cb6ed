"""The harness's own life: teardown leaves nothing, setup and teardown are idempotent, a
crashed run's leftovers are removed, a live run and a used subnet are refused."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import ip_network
from pathlib import Path

import netns
import pytest
from netns import HarnessError, Hypervisors, collisions, link_names, netns_names

pytestmark = pytest.mark.multihost

SUPPORT = Path(netns.__file__).resolve().parent
CRASH_TIMEOUT = 60.0  # the child's setup: ~0.1 s


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def ours(prefix: str) -> dict[str, list[str]]:
    """What of ``prefix`` the kernel still has, by name."""
    return {"netns": [n for n in netns_names() if n.startswith(f"{prefix}-")],
            "links": [n for n in link_names() if n.startswith(f"{prefix}-")]}


def test_teardown_leaves_nothing(tmp_path: Path):
    hv = Hypervisors(2).setup()
    prefix, run_dir = hv.prefix, hv.dir
    assert prefix is not None and ours(prefix)["netns"]
    sshds = [host.sshd_pid for host in hv]
    # Something a test forgot inside a host: a process left by an ssh session, and one
    # started in the namespace directly.
    hv["hv1"].ssh("setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")
    hv["hv2"].run("setsid sleep 600 </dev/null >/dev/null 2>&1 &")
    strays = [int(p) for host in hv for p in
              subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                             text=True, check=True).stdout.split()]
    assert len(strays) >= 4  # two sshds, two sleeps (and maybe a session)
    hv.teardown()
    assert ours(prefix) == {"netns": [], "links": []}
    assert prefix not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True, check=True).stdout
    assert prefix not in subprocess.run(["ip", "link"], capture_output=True, text=True,
                                        check=True).stdout
    assert not [pid for pid in [*sshds, *strays] if alive(pid)]
    assert not run_dir.exists()
    assert hv.leftovers() == []


def test_setup_twice_and_teardown_twice_are_harmless():
    hv = Hypervisors(1)
    hv.setup()
    pid = hv["hv1"].sshd_pid
    hv.setup()  # already up: nothing changes
    assert hv["hv1"].sshd_pid == pid
    assert hv["hv1"].ssh("echo once").stdout == "once\n"
    hv.teardown()
    hv.teardown()
    assert hv.leftovers() == []
    # Up again under the same prefix, then the context manager's teardown after ours.
    with hv:
        assert hv["hv1"].ssh("echo twice").stdout == "twice\n"
        hv.teardown()
    assert hv.leftovers() == []


@pytest.fixture
def crashed_run() -> Iterator[Callable[..., dict]]:
    """Start a 1-host run in a child process, SIGKILL the child once the host is up:
    its namespace, links, sshd and directory are left behind, its lock is free."""
    code = ("import json, sys\n"
            f"sys.path.insert(0, {str(SUPPORT)!r})\n"
            "from netns import Hypervisors\n"
            "hv = Hypervisors(1, prefix=sys.argv[1] or None).setup()\n"
            "print(json.dumps({'prefix': hv.prefix, 'dir': str(hv.dir),\n"
            "                  'sshd': hv['hv1'].sshd_pid}), flush=True)\n"
            "sys.stdin.read()\n")

    def crash(prefix: str = "") -> dict:
        child = subprocess.Popen([sys.executable, "-c", code, prefix], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        children.append(child)
        ready, _, _ = select.select([child.stdout], [], [], CRASH_TIMEOUT)
        assert ready, "the child's setup did not finish"
        info = json.loads(child.stdout.readline())
        crashed.append(info)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert alive(info["sshd"]) and ours(info["prefix"])["netns"]
        return info

    children: list[subprocess.Popen[str]] = []
    crashed: list[dict] = []
    yield crash
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    for info in crashed:  # normally gone already; not when the test failed early
        assert netns.purge_prefix(info["prefix"]) == []
        (netns.DEFAULT_BASE / f"{info['prefix']}.lock").unlink(missing_ok=True)


def test_setup_removes_a_crashed_run_with_the_same_prefix(crashed_run):
    prefix = f"t{os.getpid() % 10000}"
    old = crashed_run(prefix)
    with Hypervisors(1, prefix=prefix) as hv:
        assert not alive(old["sshd"])
        assert hv["hv1"].sshd_pid != old["sshd"]
        assert hv["hv1"].ssh("echo fresh").stdout == "fresh\n"
        assert len(ours(prefix)["netns"]) == 1
    assert hv.leftovers() == []


def test_setup_sweeps_a_crashed_run_of_another_prefix(crashed_run):
    old = crashed_run()
    with Hypervisors(1) as hv:
        assert hv.prefix != old["prefix"]
        assert ours(old["prefix"]) == {"netns": [], "links": []}
        assert not alive(old["sshd"])
        assert not Path(old["dir"]).exists()
        assert not (netns.DEFAULT_BASE / f"{old['prefix']}.lock").exists()


def test_a_live_runs_prefix_is_refused_and_left_alone(hypervisors: Hypervisors):
    intruder = Hypervisors(1, prefix=hypervisors.prefix)
    with pytest.raises(HarnessError, match="belongs to a live run"):
        intruder.setup()
    assert hypervisors["hv1"].ssh("echo untouched").stdout == "untouched\n"
    assert len(ours(hypervisors.prefix)["netns"]) == 2


def test_a_subnet_in_use_is_refused(hypervisors: Hypervisors):
    taken = str(hypervisors.subnet)
    other = Hypervisors(1, subnet=taken)
    with pytest.raises(HarnessError, match=f"subnet {taken} collides with: address "
                                           f"{hypervisors.bridge_address}/24 on "
                                           f"{hypervisors.bridge}"):
        other.setup()
    assert other.prefix is not None and other.leftovers() == []
    # The automatic choice skips it.
    with Hypervisors(1) as second:
        assert second.subnet != hypervisors.subnet
        assert second["hv1"].ssh("true").returncode == 0


def test_a_host_that_does_not_come_up_is_a_clear_error():
    broken = Hypervisors(2, sshd_config_extra="NoSuchKeyword yes")
    with pytest.raises(HarnessError) as failed:
        broken.setup()
    message = str(failed.value)
    assert "host hv1" in message and "did not come up: sshd exited with 255" in message
    assert "Bad configuration option: NoSuchKeyword" in message  # the sshd log's tail
    assert not broken.is_up and broken.leftovers() == []


def test_collision_check_reads_addresses_and_routes():
    assert any("on lo" in what for what in collisions(ip_network("127.0.0.0/24")))
    assert collisions(ip_network("10.247.255.0/24")) == []  # not in the pool, nobody uses it


def test_bad_arguments_are_refused_before_anything_is_made():
    with pytest.raises(ValueError, match="count"):
        Hypervisors(0)
    with pytest.raises(ValueError, match="prefix"):
        Hypervisors(1, prefix="Bad-Prefix")
    with pytest.raises(ValueError, match="/24"):
        Hypervisors(1, subnet="10.247.0.0/16")
