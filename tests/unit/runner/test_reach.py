"""The runner's view of how to reach the guest (runner/reach.py): the ports QEMU bound,
boots, and host keys read from the runner's own console stream into known_hosts. The
console is a real Unix socket playing QEMU's serial chardev: no QEMU, no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from chardev import FakeChardev, drain_of  # tests/support

from maqet_engine.errors import OperationTimeout, StateConflict, UsageError
from maqet_engine.runner.reach import GuestReach, guest_ssh_port, parse_usernet, ssh_patterns
from maqet_engine.runner.serial import SerialDrain

# What QEMU 7.2 answered to HMP "info usernet" for hostfwd=tcp:127.0.0.1:0-:22,
# tcp:0.0.0.0:0-:80, udp:127.0.0.1:0-:53, tcp:127.0.0.1:22222-:22 on net0, tcp::0-:22 on net1.
USERNET = (
    "Hub -1 (net0):\r\n"
    "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
    "  TCP[HOST_FORWARD]  12       127.0.0.1 37791       10.0.2.15    22     0     0\r\n"
    "  TCP[HOST_FORWARD]  11               * 35131       10.0.2.15    80     0     0\r\n"
    "  TCP[HOST_FORWARD]   8       127.0.0.1 22222       10.0.2.15    22     0     0\r\n"
    "  UDP[HOST_FORWARD]   9       127.0.0.1 56506       10.0.2.15    53     0     0\r\n"
    "Hub -1 (net1):\r\n"
    "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
    "  TCP[HOST_FORWARD]  13               * 41085       10.0.2.15    22     0     0\r\n"
    "  TCP[ESTABLISHED]   14       127.0.0.1 50000       10.0.2.15    22     0     0\r\n"
)
ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBWHlnhseLcB6KFFD4MBTA4")
ECDSA = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKdPf0Ad8B4J2/"
         "2v6H2GidmnAqoXQFndQ9JrI6h62i+1ESUoAA5LF2cdUcljRGCwwyGdvOVNtIAPUbVJt6VOb/4=")
SSH_FORWARD = {"netdev": "net0", "protocol": "tcp", "host_address": "127.0.0.1",
               "host": 40022, "guest": 22}


def block(*keys: str) -> str:
    return ("-----BEGIN SSH HOST KEY KEYS-----\r\n"
            + "".join(f"{key} root@guest\r\n" for key in keys)
            + "-----END SSH HOST KEY KEYS-----\r\n")


def test_parse_usernet_gives_what_qemu_bound():
    assert parse_usernet(USERNET) == [
        {"netdev": "net0", "protocol": "tcp", "host_address": "0.0.0.0", "host": 35131,
         "guest": 80},
        {"netdev": "net0", "protocol": "tcp", "host_address": "127.0.0.1", "host": 22222,
         "guest": 22},
        {"netdev": "net0", "protocol": "tcp", "host_address": "127.0.0.1", "host": 37791,
         "guest": 22},
        {"netdev": "net0", "protocol": "udp", "host_address": "127.0.0.1", "host": 56506,
         "guest": 53},
        {"netdev": "net1", "protocol": "tcp", "host_address": "0.0.0.0", "host": 41085,
         "guest": 22},
    ]
    assert parse_usernet("") == []


def test_ssh_patterns_name_every_ssh_forward():
    ports = parse_usernet(USERNET) + [
        {"netdev": "net2", "protocol": "tcp", "host_address": "10.1.2.3", "host": 2200,
         "guest": 22}]
    assert ssh_patterns(ports, 22) == ["[127.0.0.1]:22222", "[127.0.0.1]:37791",
                                       "[127.0.0.1]:41085", "[127.0.0.1]:2200",
                                       "[10.1.2.3]:2200"]
    assert ssh_patterns(ports, 2222) == []


@pytest.mark.parametrize(("spec", "port"), [
    ({}, 22), ({"ssh": None}, 22), ({"ssh": {"port": 2200}}, 2200),
    ({"ssh": {"port": True}}, 22), ({"ssh": "x"}, 22)])
def test_guest_ssh_port(spec: dict[str, Any], port: int):
    assert guest_ssh_port(spec) == port


class Reach:
    """A GuestReach over a real drain, with the events it recorded."""

    def __init__(self, drain: SerialDrain, chardev: FakeChardev, known_hosts: Path,
                 vm_name: str | None = None) -> None:
        self.drain, self.chardev = drain, chardev
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.reach = GuestReach(drain, known_hosts, 22, logging.getLogger("test.reach"),
                                lambda kind, data: self.events.append((kind, data)),
                                vm_name=vm_name)
        self.exited = asyncio.Event()


@contextlib.asynccontextmanager
async def reach_of(tmp_path: Path, ports: list[dict[str, Any]],
                   vm_name: str | None = None) -> AsyncIterator[Reach]:
    async with drain_of(tmp_path) as (drain, chardev):
        state = Reach(drain, chardev, tmp_path / "known_hosts", vm_name)
        state.reach.start(ports)
        watcher = asyncio.create_task(state.reach.watch())
        try:
            yield state
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def test_keys_of_a_block_cut_by_chunks_and_kernel_messages_become_known_hosts(tmp_path):
    async def main() -> tuple[dict[str, Any], list[Any]]:
        async with reach_of(tmp_path, [SSH_FORWARD]) as state:
            text = "[    1.234] Linux booting\r\nlogin: " + block(ED25519, ECDSA)
            middle = text.index(ED25519) + 30  # a kernel message cuts a key line in two
            text = text[:middle] + "[    2.500] random: crng init done\r\n" + text[middle:]
            cut = text.index("-----END") + 7  # the END marker arrives in two pieces
            await state.chardev.send(text[:cut])
            await state.chardev.send(text[cut:])
            await state.reach.wait_keys(5, state.exited)
            return state.reach.report(), state.events

    report, events = asyncio.run(main())
    known_hosts = tmp_path / "known_hosts"
    assert known_hosts.read_text() == (f"[127.0.0.1]:40022 {ED25519}\n"
                                       f"[127.0.0.1]:40022 {ECDSA}\n")
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    assert report["this_boot"] and report["boot"] == 1 and report["keys"] == [ED25519, ECDSA]
    assert report["known_hosts"] == str(known_hosts)
    assert events == [("host_keys", {"boot": 1, "keys": [ED25519, ECDSA], "changed": True,
                                     "known_hosts": str(known_hosts)})]


def test_a_new_boot_waits_for_its_own_keys_and_earlier_ones_stay_meanwhile(tmp_path):
    async def main() -> list[Any]:
        seen = []
        async with reach_of(tmp_path, [SSH_FORWARD]) as state:
            await state.chardev.send(block(ED25519))
            await state.reach.wait_keys(5, state.exited)
            state.reach.new_boot()  # the guest was reset
            report = state.reach.report()
            seen.append((report["boot"], report["this_boot"], report["keys"]))
            with pytest.raises(OperationTimeout, match="no SSH host keys"):
                await state.reach.wait_keys(0.05, state.exited)
            waiting = asyncio.create_task(state.reach.wait_keys(5, state.exited))
            await state.chardev.send("booting again\r\n" + block(ECDSA))
            await waiting
            report = state.reach.report()
            seen.append((report["boot"], report["this_boot"], report["keys"]))
            state.exited.set()
            state.reach.new_boot()
            with pytest.raises(StateConflict, match="stopped before"):
                await state.reach.wait_keys(5, state.exited)
        return seen

    assert asyncio.run(main()) == [(2, False, [ED25519]), (2, True, [ECDSA])]
    assert (tmp_path / "known_hosts").read_text() == f"[127.0.0.1]:40022 {ECDSA}\n"


def test_a_new_start_renames_known_keys_for_its_ports(tmp_path):
    """An auto port differs at each start: keys printed in an earlier run (cloud-init
    prints them once per instance) are kept under the new port."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:40022 {ED25519}\n")

    async def main() -> dict[str, Any]:
        async with reach_of(tmp_path, [{**SSH_FORWARD, "host": 40023}]) as state:
            return state.reach.report()

    report = asyncio.run(main())
    assert known_hosts.read_text() == f"[127.0.0.1]:40023 {ED25519}\n"
    assert report["keys"] == [ED25519] and not report["this_boot"]


def test_the_vm_alias_names_the_keys_with_or_without_a_forward(tmp_path):
    """What the runner does (it passes the VM's name): the guest's keys are under the
    forwards' names and ``maqet-vm-NAME`` (for ssh -o HostKeyAlias when the guest is
    reached at an address of its own), and kept for a VM without any forward too."""
    async def keys_of(ports: list[dict[str, Any]]) -> list[Any]:
        async with reach_of(tmp_path, ports, vm_name="web1") as state:
            await state.chardev.send(block(ED25519))
            await state.reach.wait_keys(5, state.exited)
            return state.events

    known_hosts = tmp_path / "known_hosts"
    asyncio.run(keys_of([SSH_FORWARD]))
    assert known_hosts.read_text() == f"[127.0.0.1]:40022,maqet-vm-web1 {ED25519}\n"
    known_hosts.unlink()
    events = asyncio.run(keys_of([]))  # e.g. one NIC on a bridged network
    assert known_hosts.read_text() == f"maqet-vm-web1 {ED25519}\n"
    assert events == [("host_keys", {"boot": 1, "keys": [ED25519], "changed": True,
                                     "known_hosts": str(known_hosts)})]


def test_without_an_ssh_forward_or_alias_keys_are_seen_but_no_file_is_written(tmp_path):
    async def main() -> tuple[dict[str, Any], list[Any]]:
        async with reach_of(tmp_path, []) as state:
            await state.chardev.send(block(ED25519))
            await state.reach.wait_keys(5, state.exited)
            return state.reach.report(), state.events

    report, events = asyncio.run(main())
    assert report["this_boot"] and report["known_hosts"] is None
    assert events[0][1]["known_hosts"] is None
    assert not (tmp_path / "known_hosts").exists()


def test_serial_read_returns_the_text_between_offsets(tmp_path):
    async def main() -> list[dict[str, object]]:
        async with reach_of(tmp_path, []) as state:
            text = "one\r\n\x1b[6ntwo\r\nthree\r\n"
            await state.chardev.send(text)
            await state.drain.wait("three", since=0, timeout=5)
            drain = state.drain
            with pytest.raises(UsageError):
                drain.read(5, 2, 100)
            return [drain.read(0, None, 100), drain.read(5, 14, 100), drain.read(0, None, 7)]

    everything, middle, last = asyncio.run(main())
    assert everything == {"text": "one\ntwo\nthree\n", "since": 0, "until": 21,
                          "offset": 21, "truncated": False}
    assert middle["text"] == "two\n" and (middle["since"], middle["until"]) == (5, 14)
    assert last == {"text": "three\n", "since": 14, "until": 21, "offset": 21,
                    "truncated": True}


def test_resets_in_a_row_are_one_boot(tmp_path):
    """After a QMP system_reset the firmware resets the machine again before the guest
    prints anything: one new boot, not three."""
    async def main() -> list[tuple[int, int]]:
        async with reach_of(tmp_path, []) as state:
            await state.chardev.send("first boot\r\n")
            await state.drain.wait("first boot", since=0, timeout=5)
            seen = []
            for _ in range(3):
                state.reach.new_boot()
                seen.append((state.reach.boot, state.reach.boot_offset))
            await state.chardev.send("second boot\r\n")
            await state.drain.wait("second boot", since=0, timeout=5)
            state.reach.new_boot()
            seen.append((state.reach.boot, state.reach.boot_offset))
            return seen

    assert asyncio.run(main()) == [(2, 12), (2, 12), (2, 12), (3, 25)]
