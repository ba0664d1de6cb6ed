"""The tiny test guest boots under raw QEMU: marker, shell, virtio disk, ACPI powerdown.

This pins down the guest every other integration test relies on, with no maqet code involved:
if this fails, the guest or the host is broken, not maqet.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import guest
import pytest
from qemu.qmp import QMPClient

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 120.0  # seconds to the marker; ~2 s under TCG here, generous for loaded CI
COMMAND_TIMEOUT = 20.0
EXIT_TIMEOUT = 30.0  # system_powerdown -> QEMU gone; ~0.04 s here
QMP_TIMEOUT = 10.0


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: install qemu-system-x86 and qemu-utils "
            "(tests/guest/build-guest.sh --with-qemu does) or deselect with -m 'not qemu'"
        )
    return path


async def _qmp_session(path: Path, commands: list[str], *, hangup_ok: bool = False) -> list[Any]:
    """Run QMP ``commands`` in order; every step bounded by QMP_TIMEOUT."""
    client = QMPClient("maqet-guest-test")
    await asyncio.wait_for(client.connect(str(path)), QMP_TIMEOUT)
    try:
        return [await asyncio.wait_for(client.execute(cmd), QMP_TIMEOUT) for cmd in commands]
    finally:
        # After system_powerdown QEMU may hang up before we do: that is the expected outcome.
        with contextlib.suppress(*((EOFError, ConnectionResetError) if hangup_ok else ())):
            await asyncio.wait_for(client.disconnect(), QMP_TIMEOUT)


def qmp(path: Path, *commands: str, hangup_ok: bool = False) -> list[Any]:
    return asyncio.run(_qmp_session(path, list(commands), hangup_ok=hangup_ok))


@dataclass
class BootedGuest:
    proc: subprocess.Popen[bytes]
    console: guest.SerialConsole
    qmp_socket: Path
    log: Path
    seconds_to_marker: float

    def run(self, command: str, result: re.Pattern[str]) -> re.Match[str]:
        """Type ``command`` at the shell prompt and wait for ``result`` in its output.

        ``result`` must not match the echoed command line itself (compute values in the shell),
        and must end with something that delimits it (``\\n``): the UART delivers output byte
        by byte, so ``hello-(\\d+)`` can match ``hello-4`` before the ``2`` arrives.
        """
        self.console.wait_for(guest.GUEST_PROMPT, COMMAND_TIMEOUT)
        self.console.send(command + "\n")
        output = self.console.wait_for(result, COMMAND_TIMEOUT)
        match = result.search(output)
        assert match is not None
        return match


@pytest.fixture(scope="module")
def guest_files() -> guest.GuestFiles:
    return guest.ensure_guest()


@pytest.fixture
def boot(guest_files: guest.GuestFiles, tmp_path: Path) -> Iterator[Callable[..., BootedGuest]]:
    """Boot the guest like TEST-GUEST.md; QEMU is killed by PID and sockets removed at teardown."""
    qemu = _binary("qemu-system-x86_64")
    # AF_UNIX paths are limited to 108 bytes and pytest's tmp_path is long: sockets go to /tmp.
    sockdir = Path(tempfile.mkdtemp(prefix="maqet-guest-", dir="/tmp"))
    started: list[tuple[subprocess.Popen[bytes], guest.SerialConsole]] = []

    def _boot(disk: Path | None = None) -> BootedGuest:
        n = len(started)
        qmp_socket, serial_socket = sockdir / f"qmp{n}.sock", sockdir / f"serial{n}.sock"
        # Both sockets are bound and listening before QEMU starts, and QEMU inherits them:
        # connecting can never race QEMU's startup (no retries, no sleeps).
        qmp_listener = guest.listen_unix(qmp_socket)
        serial_listener = guest.listen_unix(serial_socket)
        fds = (qmp_listener.fileno(), serial_listener.fileno())
        argv = [
            qemu,
            "-machine", "q35",
            "-accel", guest.test_accel(),
            "-m", "256",
            "-nodefaults",
            "-display", "none",
            "-kernel", str(guest_files.kernel),
            "-initrd", str(guest_files.initrd),
            "-append", guest.GUEST_APPEND,
            "-no-reboot",
            "-chardev", f"socket,id=qmp0,fd={fds[0]},server=on,wait=off",
            "-mon", "chardev=qmp0,mode=control",
            "-chardev", f"socket,id=s0,fd={fds[1]},server=on,wait=off",
            "-serial", "chardev:s0",
        ]  # fmt: skip
        if disk is not None:
            argv += [
                "-blockdev", f"driver=qcow2,node-name=disk0,file.driver=file,file.filename={disk}",
                "-device", "virtio-blk-pci,drive=disk0",
            ]  # fmt: skip
        log = tmp_path / f"qemu{n}.log"
        try:
            # Connected before QEMU runs: the connection waits in the backlog and QEMU
            # accepts it when its main loop starts, long before the guest prints anything.
            console = guest.SerialConsole(serial_socket)
            try:
                with log.open("wb") as out:
                    start = time.monotonic()
                    proc = subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=fds
                    )
            except BaseException:
                console.close()
                raise
        finally:
            qmp_listener.close()  # QEMU holds its own copies; its exit closes the sockets
            serial_listener.close()
        started.append((proc, console))
        try:
            console.wait_for(guest.GUEST_MARKER, BOOT_TIMEOUT)
        except guest.SerialTimeout as exc:
            raise AssertionError(f"{exc}\nQEMU log:\n{log.read_text(errors='replace')}") from exc
        return BootedGuest(proc, console, qmp_socket, log, time.monotonic() - start)

    try:
        yield _boot
    finally:
        for proc, console in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            console.close()
        shutil.rmtree(sockdir, ignore_errors=True)


def test_guest_boots_runs_commands_sees_disk_and_powers_off(boot, tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(
        [_binary("qemu-img"), "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True
    )
    vm = boot(disk)

    assert vm.run("echo hello-$((6*7))", re.compile(r"hello-(\d+)\n")).group(1) == "42"
    size = vm.run(
        'echo "vda=$([ -b /dev/vda ] && cat /sys/block/vda/size || echo none)"',
        re.compile(r"vda=(\d+|none)\n"),
    ).group(1)
    assert size == str(16 * 1024 * 1024 // 512)  # in 512-byte sectors

    status, kvm = qmp(vm.qmp_socket, "query-status", "query-kvm")
    assert status["status"] == "running"
    assert kvm["enabled"] == (guest.test_accel() == "kvm")

    qmp(vm.qmp_socket, "system_powerdown", hangup_ok=True)
    assert vm.proc.wait(timeout=EXIT_TIMEOUT) == 0, vm.log.read_text(errors="replace")


def test_powerdown_right_after_marker_is_not_lost(boot):
    """/init prints the marker only once acpid listens: an immediate powerdown must work."""
    vm = boot()
    qmp(vm.qmp_socket, "system_powerdown", hangup_ok=True)
    assert vm.proc.wait(timeout=EXIT_TIMEOUT) == 0, vm.log.read_text(errors="replace")
