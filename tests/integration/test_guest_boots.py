"""The tiny test guest boots under raw QEMU: marker, shell, virtio disk, ACPI powerdown.

This pins down the guest every other integration test relies on, with no maqet code involved:
if this fails, the guest or the host is broken, not maqet.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import guest
import pytest

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 120.0  # seconds to the marker; ~2 s under TCG here, generous for loaded CI
COMMAND_TIMEOUT = 20.0
EXIT_TIMEOUT = 30.0  # system_powerdown -> QEMU gone; ~0.04 s here


def run(vm: guest.RawGuest, command: str, result: re.Pattern[str]) -> re.Match[str]:
    """Type ``command`` at the shell prompt and wait for ``result`` in its output.

    ``result`` must not match the echoed command line itself (compute values in the shell),
    and must end with something that delimits it (``\\n``): the UART delivers output byte
    by byte, so ``hello-(\\d+)`` can match ``hello-4`` before the ``2`` arrives.
    """
    vm.console.wait_for(guest.GUEST_PROMPT, COMMAND_TIMEOUT)
    vm.console.send(command + "\n")
    output = vm.console.wait_for(result, COMMAND_TIMEOUT)
    match = result.search(output)
    assert match is not None
    return match


@pytest.fixture(scope="module")
def guest_files() -> guest.GuestFiles:
    return guest.ensure_guest()


@pytest.fixture
def boot(guest_files: guest.GuestFiles, tmp_path: Path) -> Iterator[Callable[..., guest.RawGuest]]:
    """Boot the guest like TEST-GUEST.md; QEMU is killed by PID and sockets removed at teardown."""
    with guest.RawQemu(tmp_path, prefix="maqet-guest-") as qemus:

        def _boot(disk: Path | None = None) -> guest.RawGuest:
            vm = qemus.start(guest_files.kernel, guest_files.initrd, guest.GUEST_APPEND,
                             args=[] if disk is None else guest.virtio_disk_args(disk, "disk0"))
            vm.wait_for(guest.GUEST_MARKER, BOOT_TIMEOUT)
            return vm

        yield _boot


def test_guest_boots_runs_commands_sees_disk_and_powers_off(boot, tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(
        [guest.program("qemu-img"), "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True
    )
    vm = boot(disk)

    assert run(vm, "echo hello-$((6*7))", re.compile(r"hello-(\d+)\n")).group(1) == "42"
    size = run(
        vm,
        'echo "vda=$([ -b /dev/vda ] && cat /sys/block/vda/size || echo none)"',
        re.compile(r"vda=(\d+|none)\n"),
    ).group(1)
    assert size == str(16 * 1024 * 1024 // 512)  # in 512-byte sectors

    assert vm.qmp("query-status")["status"] == "running"
    assert vm.qmp("query-kvm")["enabled"] == (guest.test_accel() == "kvm")

    assert vm.powerdown(EXIT_TIMEOUT) == 0, vm.log.read_text(errors="replace")


def test_powerdown_right_after_marker_is_not_lost(boot):
    """/init prints the marker only once acpid listens: an immediate powerdown must work."""
    vm = boot()
    assert vm.powerdown(EXIT_TIMEOUT) == 0, vm.log.read_text(errors="replace")
