"""Ansible into guests without a network: the maqet.vm.agent connection plugin, set by the
inventory plugin's agent_connection, against the ssh guest booted by maqet with
``agent: true`` and no NIC at all. Real ansible-playbook, real QEMU (TCG).

What runs: setup (facts), command, shell with 1 MB of output, copy of a 10 MB binary
(checksum and mode compared in the guest) and again (unchanged), stat, fetch, template,
a small role with a handler, become (su to nobody); a host whose agent channel nobody
opens is unreachable within its 3 s timeout while the other goes on; maqet_vm_info
live with the agent's facts; a guest rebooting in the middle of a play (reboot -f,
then ansible.builtin.reboot), later tasks work.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import guest
import pytest

from maqet_engine import engine

pytestmark = [pytest.mark.ansible, pytest.mark.qemu]

MiB = 1024 * 1024
BOOT_AGENT_TIMEOUT = 120  # the first task waits for qemu-ga of a booting guest (~3 s here)


def agent_guest(name: str, *, reboot: bool = False) -> dict[str, Any]:
    data = guest.agent_guest_definition(name, reboot=reboot)
    assert "network" not in data
    return data


def start(sandbox: Any, *definitions: dict[str, Any]) -> None:
    ctx = engine.EngineContext.for_home(str(sandbox.home))
    for data in definitions:
        engine.apply(ctx, spec=engine.load_definition(ctx, definition=data), state="running")


def inventory_config(sandbox: Any, timeouts: dict[str, int]) -> Path:
    """The inventory plugin with agent_connection, as a user would write it."""
    config = sandbox.root / "guests.maqet.yml"
    timeout = " else ".join(f"{seconds} if inventory_hostname == '{name}'"
                            for name, seconds in timeouts.items()) + " else 30"
    config.write_text(f"""\
plugin: maqet.vm.maqet
maqet_home: {sandbox.home}
agent_connection: true
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
  ansible_maqet_agent_timeout: {timeout}
""")
    return config


def test_inventory_sets_the_agent_connection(sandbox):
    start(sandbox, {"name": "fw1", "accel": guest.test_accel(), "memory": "64M",
                    "agent": True},
          {"name": "fw2", "accel": guest.test_accel(), "memory": "64M"})
    config = inventory_config(sandbox, {})
    run = sandbox.inventory_list(config, "--host", "fw1")
    assert run.rc == 0, run.explain()
    fw1 = json.loads(run.stdout)
    assert fw1["ansible_connection"] == "maqet.vm.agent"
    assert (fw1["ansible_maqet_vm"], fw1["ansible_maqet_home"]) == ("fw1", str(sandbox.home))
    run = sandbox.inventory_list(config, "--host", "fw2")
    assert "ansible_connection" not in json.loads(run.stdout)  # no channel: untouched
    # agent_addresses asks the agent: nobody answers in fw1 (no OS): a warning, no address
    config.write_text(config.read_text() + "agent_addresses: true\nagent_timeout: 1\n")
    run = sandbox.inventory_list(config, "--host", "fw1")
    assert run.rc == 0, run.explain()
    assert "maqet_guest_addresses" not in json.loads(run.stdout)
    assert re.search(r"no guest addresses for fw1: .*qemu-ga is not running",
                     " ".join(run.stderr.split())), run.stderr


def test_a_play_through_the_agent_without_a_network(sandbox, tmp_path: Path):
    start(sandbox, agent_guest("ga1"),
          {"name": "noagent1", "accel": guest.test_accel(), "memory": "64M", "agent": True})
    config = inventory_config(sandbox, {"ga1": BOOT_AGENT_TIMEOUT, "noagent1": 3})
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(10 * MiB))
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    started = time.monotonic()
    run = sandbox.playbook("agent_play.yml", args=("-i", str(config)), extra_vars={
        "big_file": str(big), "big_sha256": hashlib.sha256(big.read_bytes()).hexdigest(),
        "fetch_dir": str(fetched)})
    took = time.monotonic() - started
    assert run.recap("ga1") == {"ok": 17, "changed": 6, "unreachable": 0, "failed": 0,
                                "skipped": 0, "rescued": 0, "ignored": 0}, run.explain()
    assert run.recap("noagent1")["unreachable"] == 1, run.explain()
    assert run.recap("localhost")["ok"] == 2, run.explain()  # maqet_vm_info live + guest
    assert run.rc == 4  # some host was unreachable
    text = " ".join(run.stdout.split())
    assert re.search(r"fatal: \[noagent1\]: UNREACHABLE! .*maqet\.vm\.agent: cannot run a "
                     r"command in "
                     r"VM noagent1: no guest agent answered guest-exec within 3 s: qemu-ga "
                     r"is not running in the guest", text), run.explain()
    assert (fetched / "big.bin").read_bytes() == big.read_bytes()
    # The play itself: facts, copies and all, under TCG; the unreachable host cost ~3 s.
    assert took < 500


def test_maqet_vm_waits_for_the_agent_then_a_play_goes_through_it(sandbox):
    """wait: {agent: true}: one task creates, starts and waits for qemu-ga in a guest
    without a network; the next play reaches it through the agent connection."""
    run = sandbox.playbook("agent_wait.yml", extra_vars={"vm_definition": agent_guest("aw1")})
    assert run.rc == 0, run.explain()
    assert run.recap("localhost")["failed"] == 0, run.explain()
    assert run.recap("aw1") == {"ok": 2, "changed": 0, "unreachable": 0, "failed": 0,
                                "skipped": 0, "rescued": 0, "ignored": 0}, run.explain()


def test_a_guest_reboot_in_the_middle_of_a_play(sandbox):
    start(sandbox, agent_guest("rb1", reboot=True))
    config = inventory_config(sandbox, {"rb1": BOOT_AGENT_TIMEOUT})
    run = sandbox.playbook("agent_reboot.yml", args=("-i", str(config)))
    recap = run.recap("rb1")
    assert recap["failed"] == 0 and recap["unreachable"] == 0, run.explain()
    assert recap["ignored"] == 1 and recap["ok"] >= 6, run.explain()
    text = " ".join(run.stdout.split())
    assert re.search(r"\[rb1\]: UNREACHABLE! .*(closed its port before answering|restarted "
                     r"while)", text), run.explain()
