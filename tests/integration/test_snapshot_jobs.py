"""run_job against a real QEMU (-S -nodefaults, no guest: job mechanics only):
snapshot-save/-load/-delete awaited by events, job errors from query-jobs (a raw
disk, a missing tag), and a timeout that says what was still running."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from maqet_engine.errors import OperationTimeout, QMPCommandError
from maqet_engine.runner import jobs
from maqet_engine.runner.jobs import run_job

pytestmark = pytest.mark.qemu
CONNECT_TIMEOUT = 20.0  # QEMU -S connects to our QMP server in ~0.05 s


def _blockdev(name: str, fmt: str, path: Path) -> str:
    return json.dumps({"driver": fmt, "node-name": name,
                       "file": {"driver": "file", "filename": str(path)}})


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[Callable[[Callable[[QMPClient], Awaitable[Any]]], Any]]:
    """Run ``body(qmp)`` against a fresh QEMU with a qcow2 disk 'hdd' and a raw 'scratch'."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "hdd.qcow2"),
                    "16M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(tmp_path / "s.raw"), "1M"],
                   check=True)
    procs: list[subprocess.Popen[bytes]] = []

    def run(body: Callable[[QMPClient], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            sock = str(tmp_path / "qmp.sock")
            qmp = QMPClient("test")
            await qmp.start_server(sock)  # QEMU connects to us: no socket polling
            procs.append(subprocess.Popen(
                ["qemu-system-x86_64", "-S", "-nodefaults", "-accel", "tcg", "-display",
                 "none", "-m", "64", "-chardev", f"socket,id=mon,path={sock}",
                 "-mon", "chardev=mon,mode=control",
                 "-blockdev", _blockdev("hdd", "qcow2", tmp_path / "hdd.qcow2"),
                 "-blockdev", _blockdev("scratch", "raw", tmp_path / "s.raw"),
                 "-device", "virtio-blk-pci,drive=hdd,id=hdd",
                 "-device", "virtio-blk-pci,drive=scratch,id=scratch"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            await asyncio.wait_for(qmp.accept(), CONNECT_TIMEOUT)
            try:
                return await body(qmp)
            finally:
                await qmp.disconnect()

        return asyncio.run(main())

    yield run
    for proc in procs:
        proc.kill()
        proc.wait()


async def _snapshots(qmp: QMPClient, node: str) -> list[str]:
    nodes = await qmp.execute("query-named-block-nodes", {"flat": True})
    image = next(n for n in nodes if n.get("node-name") == node)["image"]
    return [s["name"] for s in image.get("snapshots", [])]


def test_save_load_delete_are_awaited_by_events(qemu):
    async def body(qmp: QMPClient) -> None:
        args = {"tag": "s1", "vmstate": "hdd", "devices": ["hdd"]}
        saved = await run_job(qmp, "snapshot-save", args, "j-save", 30)
        assert saved["statuses"][0] == "created" and saved["statuses"][-1] == "concluded"
        assert saved["type"] == "snapshot-save"
        assert await _snapshots(qmp, "hdd") == ["s1"]
        loaded = await run_job(qmp, "snapshot-load", args, "j-load", 30)
        assert loaded["statuses"][-1] == "concluded"
        await run_job(qmp, "snapshot-delete", {"tag": "s1", "devices": ["hdd"]}, "j-del", 30)
        assert await _snapshots(qmp, "hdd") == []
        assert await qmp.execute("query-jobs") == []  # every job dismissed
        # the same job id is free again once dismissed
        await run_job(qmp, "snapshot-save", args, "j-save", 30)

    qemu(body)


def test_job_errors_are_reported_precisely(qemu):
    async def body(qmp: QMPClient) -> None:
        with pytest.raises(QMPCommandError) as err:
            await run_job(qmp, "snapshot-save", {"tag": "s1", "vmstate": "hdd",
                                                 "devices": ["hdd", "scratch"]}, "j1", 30)
        assert err.value.error_class == jobs.JOB_FAILED
        assert err.value.desc == "Device 'scratch' is writable but does not support snapshots"
        with pytest.raises(QMPCommandError, match="Snapshot 'nope' does not exist"):
            await run_job(qmp, "snapshot-load", {"tag": "nope", "vmstate": "hdd",
                                                 "devices": ["hdd"]}, "j2", 30)
        with pytest.raises(QMPCommandError, match="No block device node 'nonode'"):
            await run_job(qmp, "snapshot-save", {"tag": "s1", "vmstate": "nonode",
                                                 "devices": ["nonode"]}, "j3", 30)
        with pytest.raises(QMPCommandError) as err:  # refused before any job exists
            await run_job(qmp, "snapshot-save", {"vmstate": "hdd", "devices": ["hdd"]},
                          "j4", 30)
        assert err.value.error_class == "GenericError" and "tag" in err.value.desc
        assert await qmp.execute("query-jobs") == []

    qemu(body)


def test_timeout_says_what_was_still_running_and_the_job_is_dismissed_later(qemu):
    async def body(qmp: QMPClient) -> None:
        with pytest.raises(OperationTimeout, match=r"snapshot-save \(job j1\) still \w+ "
                           r"after 1e-09 s"):
            await run_job(qmp, "snapshot-save", {"tag": "s1", "vmstate": "hdd",
                                                 "devices": ["hdd"]}, "j1", 1e-9)
        await asyncio.wait_for(asyncio.gather(*jobs._background), 30)
        assert await qmp.execute("query-jobs") == []
        assert await _snapshots(qmp, "hdd") == ["s1"]  # it did finish, in QEMU

    qemu(body)
