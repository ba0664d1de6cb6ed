"""Networking inside the busybox test guest, and what leaves the host, for the network
tests and the network benchmark.

- :class:`GuestShell`: commands typed into a VM's serial root shell through the engine
  (``write_console`` / ``wait_console``), with their exit status.
- :class:`Sniffer`: counts (and keeps the TTLs of) the IPv4 packets of one multicast
  group or UDP port seen on one interface, from an ``AF_PACKET`` socket in the test's
  own network namespace: the proof that a segment's traffic is where it should be, and
  nowhere else (``eth0``).
"""

from __future__ import annotations

import itertools
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

BOOT_TIMEOUT = 120.0  # QEMU start -> marker: ~2 s under TCG here
COMMAND_TIMEOUT = 60.0  # one shell command (a ping that must fail takes its -W)
OUTPUT_MAX = 1500  # characters of a command's output brought back (the UART is slow)
_ETH_P_ALL = 0x0003
_ETH_P_IP = 0x0800
_counter = itertools.count(1)


class GuestShell:
    """The root shell on a VM's serial console, driven through the engine facade."""

    def __init__(self, ctx: Any, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.offset = 0

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        import guest  # tests/guest

        from maqet_engine import engine

        found = engine.wait_console(self.ctx, self.name, re.escape(guest.GUEST_MARKER),
                                    since=0, timeout=timeout).data
        self.offset = found["offset"]

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
        """Run ``command`` (one line) and return its exit status and its output (the
        last ``OUTPUT_MAX`` characters). The shell prints both on one line after it,
        between markers it computes, so the echo of the typed line never matches. A
        command ending in ``&`` is started in the background (status 0, no output)."""
        from maqet_engine import engine

        n = 100000 + next(_counter)
        end = f"-END$(({n}+0))"
        if command.rstrip().endswith("&"):
            line = f"{command} echo M$(({n}+0))-RC=0.-OUT={end}\n"
        else:
            line = (f"{{ {command} ; }} >/tmp/.out 2>&1; rc=$?; echo \"M$(({n}+0))-RC=$rc.-OUT="
                    f"$(tr '\\n' '|' </tmp/.out | tail -c {OUTPUT_MAX}){end}\"\n")
        engine.write_console(self.ctx, self.name, line)
        pattern = rf"M{n}-RC=(\d+)\.-OUT=(.*)-END{n}"
        found = engine.wait_console(self.ctx, self.name, pattern, since=self.offset,
                                    timeout=timeout).data
        self.offset = found["offset"]
        match = re.search(pattern, found["match"])
        assert match is not None
        return int(match.group(1)), match.group(2).replace("|", "\n")

    def check(self, command: str, timeout: float = COMMAND_TIMEOUT) -> str:
        rc, output = self.run(command, timeout)
        assert rc == 0, f"{self.name}: {command!r} exited {rc}:\n{output}"
        return output

    def configure(self, address: str, *, mac: str | None = None) -> str:
        """Give the NIC (by MAC, else eth0) ``address`` (CIDR) and bring it up; returns
        the interface's name in the guest."""
        ifname = "eth0"
        if mac is not None:
            rc, _ = self.run(f"ip -o link | grep -i {mac} | cut -d: -f2 | tr -d ' ' "
                             f"> /tmp/if && test -s /tmp/if")
            assert rc == 0, f"{self.name}: no NIC with MAC {mac}"
            ifname = "$(cat /tmp/if)"
        self.check(f"ip addr add {address} dev {ifname} && ip link set {ifname} up")
        return ifname

    def ping(self, address: str, *, count: int = 3, wait: int = 3) -> bool:
        """Whether ``address`` answers at least one of ``count`` pings."""
        rc, _ = self.run(f"ping -c {count} -W {wait} {address}",
                         timeout=count * wait + COMMAND_TIMEOUT)
        return rc == 0


@dataclass
class Capture:
    packets: int = 0
    ttls: set[int] = field(default_factory=set)
    igmp: int = 0


class Sniffer:
    """Counts IPv4 packets to ``address`` (and, when given, UDP ``port``), plus IGMP
    messages about that group, seen on interface ``ifname`` of this process's network
    namespace. A context manager; read :attr:`capture` after it exits."""

    def __init__(self, ifname: str, address: str, port: int | None = None) -> None:
        self.ifname = ifname
        self.address = socket.inet_aton(address)
        self.port = port
        self.capture = Capture()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                   socket.htons(_ETH_P_ALL))
        self._sock.bind((ifname, 0))
        self._thread = threading.Thread(target=self._loop, name=f"sniff-{ifname}",
                                        daemon=True)

    def __enter__(self) -> Sniffer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)  # what is in flight
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if not ready:
                continue
            frame = self._sock.recv(65535)
            self._count(frame)

    def _count(self, frame: bytes) -> None:
        if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != _ETH_P_IP:
            return
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        protocol, ttl = ip[9], ip[8]
        if protocol == 2 and self.address in ip[header:]:  # IGMP naming the group
            self.capture.igmp += 1
            return
        if ip[16:20] != self.address:
            return
        if self.port is not None and (
                protocol != 17
                or struct.unpack("!H", ip[header + 2:header + 4])[0] != self.port):
            return
        self.capture.packets += 1
        self.capture.ttls.add(ttl)
