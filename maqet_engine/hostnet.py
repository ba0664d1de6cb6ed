"""The host side of named networks: interface addresses and tap devices, through
ioctls (no ``ip`` subprocess, no helper binary). Risky, host-dependent code kept apart
from the policy in ``engine/networks.py``.

Tap devices of ``bridged`` networks are made *non-persistent*: the kernel deletes such a
device when the last file descriptor on it closes. maqet opens it, attaches it to the
bridge, hands the fd to the runner, which hands it to QEMU and closes its own copy: from
then on QEMU's fd is the only one, so the device goes away exactly when QEMU exits,
whether it powered off, was stopped, or was SIGKILLed, and whether or not its runner is
still alive. A persistent device of the same name (left by something else, e.g.
``ip tuntap add``) is taken over and made non-persistent, so it goes too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import struct
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import HostError, StateConflict

# linux/if_tun.h, linux/sockios.h, linux/if.h
_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_TUNGETIFF = 0x800454D2
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_IFF_PERSIST = 0x0800
_SIOCGIFADDR = 0x8915
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_SIOCGIFMTU = 0x8921
_SIOCSIFMTU = 0x8922
_SIOCBRADDIF = 0x89A2
_SIOCBRDELIF = 0x89A3
_IFF_UP = 0x1
_IFREQ_SIZE = 40
_TUN_DEVICE = "/dev/net/tun"
_SYS_NET = Path("/sys/class/net")


def _ifreq(name: str, fmt: str = "", *values: object) -> bytes:
    return struct.pack("16s" + fmt, name.encode(), *values).ljust(_IFREQ_SIZE, b"\0")


def _ioctl_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)


def interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def interface_ipv4(name: str) -> str:
    """The (primary) IPv4 address of interface ``name``, in this network namespace.

    :raise HostError: no such interface, or it has no IPv4 address.
    """
    with _ioctl_socket() as sock:
        try:
            reply = fcntl.ioctl(sock, _SIOCGIFADDR, _ifreq(name))
        except OSError as err:
            if err.errno == errno.ENODEV:
                raise HostError(f"interface {name!r} does not exist on this host",
                                hint="name an existing interface in the network's "
                                "'interface' (ip -br link lists them)") from None
            if err.errno == errno.EADDRNOTAVAIL:
                raise HostError(f"interface {name!r} has no IPv4 address; a segment joins "
                                "its multicast group through one",
                                hint=f"add one (ip addr add ... dev {name}) or name another "
                                "interface") from None
            raise HostError(f"cannot read the address of interface {name!r}: "
                            f"{err.strerror}") from err
    return socket.inet_ntoa(reply[20:24])  # ifr_addr: sockaddr_in at offset 16


def is_bridge(name: str) -> bool:
    return (_SYS_NET / name / "bridge").is_dir()


def _master(name: str) -> str | None:
    """The bridge (or other master) interface ``name`` is enslaved to, if any."""
    try:
        return os.path.basename(os.readlink(_SYS_NET / name / "master"))
    except OSError:
        return None


def tap_name(data_dir: Path, vm_id: int, index: int) -> str:
    """The tap device of NIC ``index`` of VM ``vm_id``: ``mqt`` + 4 hex digits of the
    installation's data directory + ``-`` + the id in hex + ``-`` + the position.

    Deterministic, so a later command finds what a crashed one left; the installation's
    digits keep two maqet homes on one host (each has a VM 1) apart.

    :raise HostError: the name would exceed 15 characters (an id above 0xfffff).
    """
    home = hashlib.sha256(os.fsencode(os.path.abspath(data_dir))).hexdigest()[:4]
    name = f"{C.TAP_PREFIX}{home}-{vm_id:x}-{index}"
    if len(name) > C.IFNAME_MAX:
        raise HostError(f"the tap device name {name!r} of VM {vm_id} NIC {index} is longer "
                        f"than {C.IFNAME_MAX} characters",
                        hint="give the VM fewer NICs, or define it anew (a new id)")
    return name


def open_tap(name: str, bridge: str) -> int:
    """Create tap device ``name`` (or take over a persistent leftover of that name),
    attach it to ``bridge``, bring it up, and return its fd (close-on-exec; the caller
    passes it on). The device lives exactly as long as fds on it are open.

    :raise HostError: no bridge of that name, no /dev/net/tun, missing privileges.
    :raise StateConflict: a process holds a device of that name already.
    """
    if not is_bridge(bridge):
        raise HostError(f"bridge {bridge!r} does not exist on this host" if not
                        interface_exists(bridge) else f"{bridge!r} is not a bridge",
                        hint="create the bridge first (ip link add NAME type bridge), or "
                        "fix the network's 'bridge'")
    try:
        fd = os.open(_TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise HostError(f"cannot open {_TUN_DEVICE}: {err.strerror}",
                        hint="bridged networks need root (CAP_NET_ADMIN) and the tun "
                        "module (modprobe tun)") from err
    try:
        try:
            reply = fcntl.ioctl(fd, _TUNSETIFF,
                                _ifreq(name, "H", _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR))
        except OSError as err:
            if err.errno == errno.EBUSY:
                raise StateConflict(f"tap device {name} is in use by another process",
                                    hint="a QEMU maqet does not know about holds it; find it "
                                    f"(grep -l {name} /proc/*/fdinfo/*) and stop it") from None
            if err.errno in (errno.EPERM, errno.EACCES):
                raise HostError(f"cannot create tap device {name}: {err.strerror}",
                                hint="bridged networks need root (CAP_NET_ADMIN)") from None
            if err.errno == errno.EINVAL:
                raise StateConflict(f"cannot create tap device {name}: a device of that "
                                    "name exists and is not a tap device",
                                    hint=f"remove or rename it (ip link del {name})") from None
            raise HostError(f"cannot create tap device {name}: {err.strerror}") from err
        if struct.unpack("16sH", reply[:18])[1] & _IFF_PERSIST:  # a leftover: ours now
            fcntl.ioctl(fd, _TUNSETPERSIST, 0)
        with _ioctl_socket() as sock:
            mtu = struct.unpack("16si", fcntl.ioctl(sock, _SIOCGIFMTU,
                                                    _ifreq(bridge, "i", 0))[:20])[1]
            fcntl.ioctl(sock, _SIOCSIFMTU, _ifreq(name, "i", mtu))
            index = socket.if_nametoindex(name)
            master = _master(name)  # a leftover may still be another bridge's port
            if master is not None and master != bridge:
                fcntl.ioctl(sock, _SIOCBRDELIF, _ifreq(master, "i", index))
            if master != bridge:
                fcntl.ioctl(sock, _SIOCBRADDIF, _ifreq(bridge, "i", index))
            flags = struct.unpack("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS,
                                                      _ifreq(name, "H", 0))[:18])[1]
            _no_host_addresses(name)
            fcntl.ioctl(sock, _SIOCSIFFLAGS, _ifreq(name, "H", flags | _IFF_UP))
    except OSError as err:
        os.close(fd)
        raise HostError(f"cannot attach tap device {name} to bridge {bridge}: "
                        f"{err.strerror}") from err
    except BaseException:
        os.close(fd)
        raise
    return fd


def _no_host_addresses(name: str) -> None:
    """No IPv6 link-local address (nor its router solicitations) on the tap device: it
    is a bridge port, the host has no business on it. Best effort (no IPv6: nothing)."""
    with contextlib.suppress(OSError):
        (Path("/proc/sys/net/ipv6/conf") / name / "disable_ipv6").write_text("1\n")


def remove_leftover_tap(name: str) -> bool:
    """Delete tap device ``name`` if it exists and nobody holds it (a persistent
    leftover); returns whether it was deleted. A device some process holds is left
    alone (it goes when that process closes it)."""
    if not interface_exists(name):
        return False
    try:
        fd = os.open(_TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:  # attaching works only when no process holds it (else EBUSY)
            fcntl.ioctl(fd, _TUNSETIFF, _ifreq(name, "H", _IFF_TAP | _IFF_NO_PI))
            fcntl.ioctl(fd, _TUNSETPERSIST, 0)
        except OSError:  # held by a process, or not a tap device: not ours to delete
            return False
        return True
    finally:
        os.close(fd)  # the last fd on a non-persistent device: the kernel deletes it
