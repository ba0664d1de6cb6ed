"""Bridged networks (root): a VM on a host bridge reaches another namespace on that
bridge, and its tap device never outlives QEMU: not after a stop, not after QEMU or its
runner is SIGKILLed, and a persistent leftover of that name is cleaned up.

The test owns everything it touches (the ``lab_bridge`` fixture, tests/support/labbridge.py):
a bridge in the root namespace with no address (so nothing is routed anywhere from it), and
a network namespace plugged into it by a veth, holding the address the guest pings (a /24
that nothing on this machine uses).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import struct
from pathlib import Path

import guest
import pytest
from guestnet import GuestShell
from labbridge import ip
from procs import wait_pid_exit

from maqet_engine import engine, hostnet

pytestmark = pytest.mark.qemu

EXIT_TIMEOUT = 10.0  # a SIGKILLed process is gone in milliseconds


def make_persistent_tap(name: str) -> None:
    """What e.g. 'ip tuntap add NAME mode tap' leaves: a tap nobody holds."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x1002).ljust(40, b"\0"))
        fcntl.ioctl(fd, 0x400454CB, 1)  # TUNSETPERSIST
    finally:
        os.close(fd)


def master_of(ifname: str) -> str | None:
    link = Path(f"/sys/class/net/{ifname}/master")
    return os.path.basename(os.readlink(link)) if link.exists() else None


def test_bridged_vm_reaches_the_bridge_and_leaves_no_tap(vms, lab_bridge):
    ctx = vms.ctx()
    name = f"br-{secrets.token_hex(3)}"
    engine.apply_network(ctx, engine.load_network(ctx, definition={
        "name": name, "type": "bridged", "bridge": lab_bridge.bridge}))
    spec = engine.load_definition(ctx, definition=guest.guest_definition(
        "a", vms.guest, network=[{"network": name}]))
    engine.apply(ctx, spec=spec, state="running")
    vms.names.append("a")
    tap = engine.show(ctx, "a").data["networks"][0]["tap"]
    assert hostnet.interface_exists(tap) and master_of(tap) == lab_bridge.bridge
    shell = GuestShell(ctx, "a")
    shell.wait_ready()
    shell.configure(lab_bridge.guest_address())
    assert shell.ping(lab_bridge.peer), "the guest cannot reach the namespace on the bridge"

    # 1. A graceful stop: the device goes with QEMU.
    engine.stop(ctx, "a")
    assert not hostnet.interface_exists(tap)

    # 2. QEMU SIGKILLed: the kernel deletes the device with QEMU's last fd.
    engine.start(ctx, "a")
    assert hostnet.interface_exists(tap)
    qemu = engine.status(ctx, "a").data["qemu_pid"]
    os.kill(qemu, signal.SIGKILL)
    assert wait_pid_exit(qemu, EXIT_TIMEOUT)
    runner_pid = engine.status(ctx, "a").data["runner_pid"]
    if runner_pid:
        wait_pid_exit(runner_pid, EXIT_TIMEOUT)
    assert not hostnet.interface_exists(tap)
    assert engine.status(ctx, "a").data["status"] == "crashed"
    engine.start(ctx, "a")  # the same name can be created again at once
    assert hostnet.interface_exists(tap)

    # 3. The runner SIGKILLed: QEMU keeps its NIC (the VM still runs), then QEMU too.
    status = engine.status(ctx, "a").data
    os.kill(status["runner_pid"], signal.SIGKILL)
    assert wait_pid_exit(status["runner_pid"], EXIT_TIMEOUT)
    assert hostnet.interface_exists(tap) and master_of(tap) == lab_bridge.bridge
    os.kill(status["qemu_pid"], signal.SIGKILL)
    assert wait_pid_exit(status["qemu_pid"], EXIT_TIMEOUT)
    assert not hostnet.interface_exists(tap)
    assert engine.status(ctx, "a").data["status"] == "crashed"

    # 4. A persistent device of that name (not maqet's doing) is removed by the next
    # command, or taken over by a start and gone after the stop.
    make_persistent_tap(tap)
    engine.stop(ctx, "a")  # records the crash, cleans what is left
    assert not hostnet.interface_exists(tap)
    make_persistent_tap(tap)
    other = f"mqto{secrets.token_hex(2)}"  # ...even one that is another bridge's port
    try:
        ip("link", "add", other, "type", "bridge")
        ip("link", "set", tap, "master", other)
        engine.start(ctx, "a")
    finally:
        ip("link", "del", other, check=False)
    assert master_of(tap) == lab_bridge.bridge
    shell = GuestShell(ctx, "a")
    shell.wait_ready()
    shell.configure(lab_bridge.guest_address())
    assert shell.ping(lab_bridge.peer)
    engine.stop(ctx, "a", force=True)
    assert not hostnet.interface_exists(tap)
