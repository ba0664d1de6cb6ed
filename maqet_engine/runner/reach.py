"""How clients reach the guest, as the runner sees it: the host ports QEMU really bound
for the user-net forwards, and the guest's SSH host keys, read from this runner's own
console stream at every boot and written into the VM's ``known_hosts``.

Ports: right after QMP connects the runner asks QEMU (HMP ``info usernet`` through
``human-monitor-command``) and records the ``HOST_FORWARD`` lines in the store
(``ports_json``), so a forward with ``host: auto`` (``hostfwd=...:0-:GUEST``: slirp bound
a free port itself) shows its real port. The engine matches them to the spec's forwards.

Boots: a boot is this QEMU's start, and every guest ``RESET`` (QMP event) after which
the guest printed something (resets in a row, as the firmware makes them, are one); the
runner keeps the console offset where each boot began (``serial_wait since="boot"``).

Host keys: cloud-init prints the guest's host keys between ``-----BEGIN SSH HOST KEY
KEYS-----`` and ``-----END SSH HOST KEY KEYS-----`` (once per instance; the test's ssh
guest at every boot). The watcher looks for the END line in the text of the current boot
only, parses the complete block that ends there (:mod:`maqet_engine.cloudinit.console`:
kernel messages cut into it are removed, damaged lines skipped) and writes known_hosts
atomically, mode 0600, naming the guest by each SSH forward (``[127.0.0.1]:PORT``, and
``[ADDRESS]:PORT`` for a forward on another address) and by the VM's host key alias
(``maqet-vm-NAME``, for ``ssh -o HostKeyAlias``: a guest reached at an address of its own,
on a ``bridged`` or ``tap`` network, which maqet does not know), then records the event
``host_keys``. So the keys are kept for a VM without any forward too. It never reads
``serial.log``: QEMU 7.2 may write a character twice into that file when the serial
socket is full. The keys of an earlier boot stay in the file
(cloud-init prints them once per instance); at each start the file is rewritten for the
ports of this run (``auto`` ports change), and the engine removes it when a new
cloud-init seed makes a new instance (new keys).

Only :mod:`.console` and :mod:`.known_hosts` of the cloudinit package are imported: no
definition code and no libcrypto in the runner (its memory counts).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.cloudinit.console import KEYS_END, host_keys_from_console
from maqet_engine.cloudinit.known_hosts import (
    host_key_alias,
    host_pattern,
    known_hosts_lines,
    read_known_hosts,
    write_known_hosts,
)
from maqet_engine.errors import MaqetError, OperationTimeout, StateConflict
from maqet_engine.runner.serial import SerialDrain

# "Hub -1 (net0):" starts the forwards of netdev net0; then one line per socket:
# "  TCP[HOST_FORWARD]  12       127.0.0.1 37791       10.0.2.15    22     0     0"
# (the source address is "*" for a forward on every interface).
_HUB = re.compile(r"^Hub -?\d+ \((?P<netdev>[^)]*)\):")
_FORWARD = re.compile(r"^\s*(?P<protocol>TCP|UDP)\[HOST_FORWARD\]\s+-?\d+\s+(?P<address>\S+)"
                      r"\s+(?P<host>\d+)\s+\S+\s+(?P<guest>\d+)")
_ANY = ("*", "0.0.0.0")
_LOOPBACK = "127.0.0.1"

Recorder = Callable[[str, dict[str, Any]], None]


def parse_usernet(text: str) -> list[dict[str, Any]]:
    """The host forwards in HMP ``info usernet`` output, as QEMU bound them:
    ``{"netdev", "protocol", "host_address", "host", "guest"}`` each (``0.0.0.0`` for
    every interface), sorted."""
    ports: list[dict[str, Any]] = []
    netdev = None
    for line in text.splitlines():
        hub = _HUB.match(line)
        if hub:
            netdev = hub["netdev"]
            continue
        found = _FORWARD.match(line)
        if found and netdev is not None:
            address = found["address"]
            ports.append({"netdev": netdev, "protocol": found["protocol"].lower(),
                          "host_address": "0.0.0.0" if address in _ANY else address,
                          "host": int(found["host"]), "guest": int(found["guest"])})
    return sorted(ports, key=lambda p: (p["netdev"], p["protocol"], p["host_address"],
                                        p["guest"], p["host"]))


def guest_ssh_port(spec: dict[str, Any]) -> int:
    """The guest's SSH port from the stored definition's data (``ssh.port``, default 22).
    Read as data: the runner never imports the definition package."""
    section = spec.get("ssh") or {}
    port = section.get("port") if isinstance(section, dict) else None
    return port if isinstance(port, int) and not isinstance(port, bool) else C.SSH_DEFAULT_PORT


def ssh_patterns(ports: list[dict[str, Any]], guest_port: int) -> list[str]:
    """known_hosts names of the guest's SSH server: for each TCP forward to
    ``guest_port``, ``[127.0.0.1]:PORT`` and, for a forward on another address,
    ``[ADDRESS]:PORT`` too."""
    patterns: list[str] = []
    for fwd in ports:
        if fwd["protocol"] != "tcp" or fwd["guest"] != guest_port:
            continue
        hosts = [_LOOPBACK]
        if fwd["host_address"] not in (*_ANY, _LOOPBACK):
            hosts.append(fwd["host_address"])
        for host in hosts:
            pattern = host_pattern(host, fwd["host"])
            if pattern not in patterns:
                patterns.append(pattern)
    return patterns


class GuestReach:
    """Ports, boots and host keys of one running VM (see the module doc)."""

    def __init__(self, serial: SerialDrain, known_hosts: Path, guest_port: int,
                 log: logging.Logger, record: Recorder, vm_name: str | None = None) -> None:
        self.serial = serial
        self.known_hosts = known_hosts
        self.guest_port = guest_port
        # The VM's name for the guest in known_hosts, whatever address reaches it.
        self.alias = host_key_alias(vm_name) if vm_name else None
        self.log = log
        self._record = record
        self.ports: list[dict[str, Any]] = []
        self.keys: list[str] = []  # the keys known_hosts holds (or would, with no name)
        self.boot = 1  # this QEMU's start (for this runner), then one more per RESET
        self.boot_offset = 0
        self.keys_boot: int | None = None  # the boot whose console printed self.keys
        self._keys_seen = asyncio.Event()  # set once keys_boot == boot; replaced per boot

    # --- start and boots ------------------------------------------------------------------
    def start(self, ports: list[dict[str, Any]]) -> None:
        """The ports of this run: keys known from an earlier boot are kept, under the new
        ports' names (an ``auto`` port differs at each start)."""
        self.ports = ports
        self.boot_offset = self.serial.offset
        try:
            self.keys = read_known_hosts(self.known_hosts)
        except OSError as err:
            self.log.warning("cannot read %s: %s", self.known_hosts, err)
        if self.keys:
            self._write()

    def new_boot(self) -> None:
        """The guest was reset: what it prints from here on is a new boot. Resets before
        the guest printed anything belong to the boot they interrupt (the firmware resets
        the machine once or twice after a QMP ``system_reset``)."""
        if self.serial.offset == self.boot_offset and self.keys_boot != self.boot:
            return
        self.boot += 1
        self.boot_offset = self.serial.offset
        self._keys_seen.set()  # wake waiters: they now wait for this boot's keys
        self._keys_seen = asyncio.Event()

    # --- the console watcher ----------------------------------------------------------------
    async def watch(self) -> None:
        """Find each complete host key block of the current boot as it arrives."""
        cursor = self.boot_offset
        while True:
            changed = self.serial.changed
            cursor = max(cursor, self.boot_offset)
            start, text = self.serial.text(cursor)
            found = text.find(KEYS_END)
            if found >= 0:
                cursor = start + found + len(KEYS_END)
                self._block_ending_at(cursor)
                continue
            # A marker cut by the end of the text is searched again when it grows.
            cursor = max(cursor, start + len(text) - len(KEYS_END) + 1)
            if self.serial.closed:
                return
            await changed.wait()

    def _block_ending_at(self, end: int) -> None:
        since = max(self.boot_offset, end - C.HOST_KEYS_WINDOW_CHARS)
        _, text = self.serial.text(since, end)
        keys = host_keys_from_console(text)
        if not keys:
            self.log.warning("a host key block without a complete, valid key (boot %d)",
                             self.boot)
            return
        self.keys = keys
        self.keys_boot = self.boot
        written = self._write()
        self.log.info("host keys of boot %d: %s (%s)", self.boot,
                      ", ".join(k.split()[0] for k in keys),
                      "known_hosts written" if written else
                      "known_hosts unchanged" if written is False else
                      "known_hosts not written")
        self._record("host_keys", {
            "boot": self.boot, "keys": keys, "changed": bool(written),
            "known_hosts": None if written is None else str(self.known_hosts)})
        self._keys_seen.set()

    def _write(self) -> bool | None:
        """Write known_hosts for the keys, under the SSH forwards' names and the VM's
        alias: whether it changed; None when there is nothing to name the guest by (no
        forward to its SSH port and no alias) or it cannot be written (logged: a guest
        must not suffer from a full disk)."""
        patterns = ssh_patterns(self.ports, self.guest_port)
        if self.alias:
            patterns.append(self.alias)
        if not patterns or not self.keys:
            return None
        try:
            return write_known_hosts(self.known_hosts, known_hosts_lines(patterns, self.keys))
        except (MaqetError, ValueError, OSError) as err:
            self.log.error("cannot write %s: %s", self.known_hosts, err)
            return None

    # --- clients ------------------------------------------------------------------------------
    async def wait_keys(self, timeout: float, exited: asyncio.Event) -> None:
        """Until the console of the current boot printed host keys (a reset meanwhile
        makes it wait for the next boot's)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.keys_boot != self.boot:
            if exited.is_set():
                raise StateConflict("the VM stopped before its guest printed SSH host keys")
            waiters = [asyncio.ensure_future(self._keys_seen.wait()),
                       asyncio.ensure_future(exited.wait())]
            try:
                done, _ = await asyncio.wait(waiters, timeout=max(deadline - loop.time(), 0),
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if not done:
                raise OperationTimeout(
                    f"the guest printed no SSH host keys on its console within {timeout:g} s "
                    "of this boot",
                    hint="maqet reads them from cloud-init's '-----BEGIN SSH HOST KEY "
                    "KEYS-----' block (see 'maqet logs'); a guest without cloud-init needs "
                    "its keys in known_hosts some other way")

    def report(self) -> dict[str, Any]:
        return {"boot": self.boot, "boot_offset": self.boot_offset, "keys": list(self.keys),
                "this_boot": self.keys_boot == self.boot,
                "known_hosts": str(self.known_hosts) if self.known_hosts.exists() else None,
                "ports": [dict(p) for p in self.ports], "guest_port": self.guest_port}
