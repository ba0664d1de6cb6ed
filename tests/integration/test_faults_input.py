"""Typed input never leaks across a snapshot revert (issue 9, item 8).

The guest's keyboard shell reads tty1 and writes to the serial console (see
tests/guest/README.md); its root is a ramfs, so a live snapshot holds every file. A
command typed on the keyboard creates a file; right after, the VM reverts to a snapshot
taken before the typing. If any key of that command reached the restored guest, the
command runs there and the file exists. Everything waits on events (the runner's
serial_wait, process exit), never on time.

The failure this guards against: QMP ``send-key`` with a hold time queues the keys in
QEMU and returns at once while QEMU delivers them over seconds; a snapshot load in that
window restored the snapshot, then QEMU typed the rest into the restored guest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from guest import GUEST_KEYBOARD_PROMPT, wait_console, wait_marker

from maqet_engine import engine
from maqet_engine.engine import EngineContext, apply
from maqet_engine.errors import StateConflict

pytestmark = pytest.mark.qemu
VMFactory = Any  # the 'vms' fixture of tests/integration/conftest.py
JOB_TIMEOUT = 60.0  # a live snapshot of this 256 MiB guest: ~1.2 s create, ~0.2 s load
TYPE_TIMEOUT = 60.0  # typing COMMAND takes ~2.5 s
# ~110 keys, ~30 of them shifted: ~2.5 s of typing at SEND_KEY_HOLD_MS per key. The
# padding makes the typing window long; $((...)) keeps the output unlike the input.
COMMAND = (": " + "padding-" * 10 + "; touch /leaked; echo LEAK-$((6*7))\n")
PROBE = "[ -e /leaked ] && echo LEAKED-$((40+2)) || echo CLEAN-$((40+2))"


def serial_shell(vms: VMFactory, command: str, done: str, since: int) -> tuple[str, int]:
    """Run ``command`` in the serial shell; wait for the regex ``done`` after ``since``."""
    engine.write_console(vms.ctx(), "vm1", command + "\n")
    return wait_console(vms.paths, "vm1", done, since=since)


@pytest.fixture
def snapshotted(vms: VMFactory) -> tuple[EngineContext, int]:
    """The guest running with a qcow2 disk (for RAM state), its keyboard shell ready,
    and snapshot 'clean' taken; returns the context and the console offset."""
    vms.define("vm1", storage=[{"name": "hdd", "type": "qcow2", "size": "16M"}])
    ctx = vms.ctx()
    apply(ctx, name="vm1", state="running")
    offset = wait_marker(vms.paths, "vm1")
    _, offset = wait_console(vms.paths, "vm1", GUEST_KEYBOARD_PROMPT, since=offset)
    _, offset = serial_shell(vms, PROBE, r"CLEAN-42|LEAKED-42", offset)
    engine.snapshot(ctx, "vm1", "clean", timeout=JOB_TIMEOUT)
    return ctx, offset


def assert_no_leak(vms: VMFactory, ctx: EngineContext, offset: int) -> None:
    """After a revert: nothing of COMMAND runs in the restored guest.

    Keys typed now on the keyboard queue behind anything still pending, so once their
    output shows, every earlier key has been delivered: the probe then sees the file
    if any part of COMMAND (its Enter included) reached the restored guest."""
    _, offset = serial_shell(vms, "echo REVERTED-$((2+3))", r"REVERTED-5", offset)
    engine.type_text(ctx, "vm1", "echo AFTER-$((1+1))\n", timeout=TYPE_TIMEOUT)
    match, offset = wait_console(vms.paths, "vm1", r"LEAK-42|AFTER-2", since=offset)
    assert match == "AFTER-2", "the typed command ran in the restored guest"
    match, _ = serial_shell(vms, PROBE, r"CLEAN-42|LEAKED-42", offset)
    assert match == "CLEAN-42", "the typed command created /leaked in the restored guest"


def test_type_then_revert_leaves_nothing_in_the_restored_guest(
        vms: VMFactory, snapshotted: tuple[EngineContext, int]):
    ctx, offset = snapshotted
    engine.type_text(ctx, "vm1", COMMAND, timeout=TYPE_TIMEOUT)
    result = engine.snapshot(ctx, "vm1", "clean", state="reverted", timeout=JOB_TIMEOUT)
    assert result.describe()[0].startswith("reverted to snapshot clean (RAM and")
    assert_no_leak(vms, ctx, offset)


def test_revert_from_another_client_waits_for_keys_being_typed(
        vms: VMFactory, snapshotted: tuple[EngineContext, int]):
    """`maqet type` in another process is halfway through COMMAND when this client
    reverts: the runner finishes the typing before it loads the snapshot."""
    ctx, offset = snapshotted
    typist = subprocess.Popen(
        [sys.executable, "-m", "maqet_engine", "type", "vm1",
         "echo STARTED-$((2*4))\n" + COMMAND], env=os.environ.copy(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The first line ran: the runner is now typing COMMAND (~2.5 s of keys).
        _, offset = wait_console(vms.paths, "vm1", r"STARTED-8", since=offset)
        engine.snapshot(ctx, "vm1", "clean", state="reverted", timeout=JOB_TIMEOUT)
        out, err = typist.communicate(timeout=TYPE_TIMEOUT)
        assert typist.returncode == 0, err
    finally:
        if typist.poll() is None:
            os.kill(typist.pid, signal.SIGKILL)
            typist.wait()
    assert_no_leak(vms, ctx, offset)



def test_keys_to_a_paused_vm_are_refused_not_lost(
        vms: VMFactory, snapshotted: tuple[EngineContext, int]):
    """A paused guest cannot take keys (QEMU refuses input events then): the caller is
    told so, and after resume typing works again, no key left held down."""
    ctx, offset = snapshotted
    engine.pause(ctx, "vm1")
    with pytest.raises(StateConflict, match="'vm1' is paused: the guest cannot take keys"):
        engine.type_text(ctx, "vm1", "echo LOST-$((1+1))\n", timeout=TYPE_TIMEOUT)
    engine.resume(ctx, "vm1")
    engine.type_text(ctx, "vm1", "echo typed-$((3*3))\n", timeout=TYPE_TIMEOUT)
    match, _ = wait_console(vms.paths, "vm1", r"LOST-2|typed-9|TYPED-9", since=offset)
    assert match == "typed-9"
