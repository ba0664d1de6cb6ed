"""The TTL of a segment's multicast packets, set on QEMU's own socket.

QEMU 7.2's ``dgram`` netdev creates its multicast socket itself and sets no TTL, so the
kernel's default applies: 1, the value maqet wants by default (packets never leave the
link). A segment with another ``ttl`` gets it here, once QEMU answers QMP (its netdevs
exist by then) and before the VM counts as started: the runner, QEMU's parent, takes a
duplicate of QEMU's socket with ``pidfd_getfd(2)`` and sets ``IP_MULTICAST_TTL`` on it
(the option belongs to the socket, which both fds share). The socket is found by the
inode of the UDP socket bound to the group and port, in QEMU's own
``/proc/PID/net/udp``. If that fails, the start fails. Before it (the milliseconds
between QEMU's start and its first QMP answer) the TTL is the kernel's 1: never more
than asked for.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

from maqet_engine.errors import HostError

_SYS_PIDFD_GETFD = 438  # x86-64 and every other Linux architecture (since 5.6)


def _udp_inodes(pid: int) -> dict[int, tuple[str, int]]:
    """Inode -> (local IPv4 address, port) of the UDP sockets in ``pid``'s namespace."""
    found: dict[int, tuple[str, int]] = {}
    with open(f"/proc/{pid}/net/udp") as table:
        next(table)  # header
        for line in table:
            fields = line.split()
            address, port = fields[1].split(":")
            packed = struct.pack("<I", int(address, 16))  # /proc prints the u32 in host order
            found[int(fields[9])] = (socket.inet_ntoa(packed), int(port, 16))
    return found


def _socket_fds(pid: int) -> dict[int, int]:
    """Inode -> fd number of ``pid``'s sockets."""
    fds: dict[int, int] = {}
    for entry in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
            if target.startswith("socket:["):
                fds[int(target[8:-1])] = int(entry)
    return fds


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    dup = int(libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0))
    if dup < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return dup


def set_multicast_ttl(pid: int, pidfd: int, wanted: list[tuple[str, int, int]]) -> None:
    """Set ``IP_MULTICAST_TTL`` on QEMU's sockets bound to each ``(group, port)``.

    :raise HostError: a socket is missing, or the kernel refuses (no ``pidfd_getfd``, no
        permission to take QEMU's fds).
    """
    try:
        bound = _udp_inodes(pid)
        fds = _socket_fds(pid)
        for group, port, ttl in wanted:
            matches = [fd for inode, fd in fds.items() if bound.get(inode) == (group, port)]
            if not matches:
                raise HostError(f"QEMU has no socket on multicast group {group}:{port} to "
                                f"set TTL {ttl} on", hint="see QEMU's log")
            for fd in matches:
                dup = _pidfd_getfd(pidfd, fd)
                with socket.socket(fileno=dup) as sock:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    except OSError as err:
        raise HostError(f"cannot set the multicast TTL on QEMU's socket: {err.strerror}",
                        hint="a segment's 'ttl' other than 1 needs Linux >= 5.6 "
                        "(pidfd_getfd) and a runner allowed to take QEMU's fds (ptrace "
                        "rules: its parent, same user or root)") from err
