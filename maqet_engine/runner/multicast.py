"""A segment's multicast socket, confined to its interface and given its TTL.

QEMU 7.2's ``dgram`` netdev creates its multicast socket itself: bound to the group and
port, joined on the interface maqet names (``local.host``), sending through it. Two
things it leaves at the kernel's defaults, which this module sets on QEMU's own socket:

- ``IP_MULTICAST_ALL`` (default 1): a socket bound to a group receives that group's
  datagrams arriving on *any* interface where anything on the host joined it. Another
  user who joins the same group:port on eth0 would feed eth0's traffic into a segment
  meant for ``lo``. Set to 0: only what arrives on the interface QEMU joined on.
- ``IP_MULTICAST_TTL`` (default 1, which is maqet's default too): the segment's ``ttl``.

Once QEMU answers QMP (its netdevs exist by then) and before the VM counts as started,
the runner (QEMU's parent) takes a duplicate of each such socket with
``pidfd_getfd(2)`` and sets both options on it (they belong to the socket, which both
fds share). The socket is found by the inode of the UDP socket bound to the group and
port, in QEMU's own ``/proc/PID/net/udp``. If that fails, the start fails. Before it,
for the milliseconds between QEMU's start and its first QMP answer, the guest has no
network driver yet and the TTL is the kernel's 1.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

from maqet_engine.errors import HostError

_SYS_PIDFD_GETFD = 438  # x86-64 and every other Linux architecture (since 5.6)
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # linux/in.h


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


def confine_multicast(pid: int, pidfd: int, segments: list[tuple[str, int, int]]) -> None:
    """On QEMU's socket of each ``(group, port, ttl)``: ``IP_MULTICAST_ALL`` 0 and
    ``IP_MULTICAST_TTL`` ttl.

    :raise HostError: a socket is missing, or the kernel refuses (no ``pidfd_getfd``, no
        permission to take QEMU's fds).
    """
    try:
        bound = _udp_inodes(pid)
        fds = _socket_fds(pid)
        for group, port, ttl in segments:
            matches = [fd for inode, fd in fds.items() if bound.get(inode) == (group, port)]
            if not matches:
                raise HostError(f"QEMU has no socket on multicast group {group}:{port} to "
                                "confine", hint="see QEMU's log")
            for fd in matches:
                with socket.socket(fileno=_pidfd_getfd(pidfd, fd)) as sock:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    except OSError as err:
        raise HostError(f"cannot confine QEMU's multicast socket: {err.strerror}",
                        hint="segments need Linux >= 5.6 (pidfd_getfd) and a runner "
                        "allowed to take QEMU's fds (ptrace rules: its parent, same user "
                        "or root)") from err
