"""A segment hears only its own interface (root: it builds two network namespaces).

In namespace A a VM sits on a segment on ``lo``. A process in A joins the same group and
port on A's veth (as another user's same-named segment on eth0 would), and namespace B,
at the other end of the veth, sends an Ethernet frame for the VM to that group. The
frame reaches A (that process receives it), but not the VM: maqet sets
``IP_MULTICAST_ALL`` 0 on QEMU's socket, which otherwise takes the group's datagrams
from every interface where anything joined it. The same frame sent on ``lo`` does reach
the VM (so the frame itself is fine).

Everything is the test's own: both namespaces, the veth, 10.252.0.0/24 between them,
10.250.8.0/24 inside the guest.
"""

from __future__ import annotations

import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import guest
import pytest
import yaml
from guestnet import GuestShell
from netns import netns_pids
from procs import kill_pids

from maqet_engine import engine

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parents[2]
GUEST_IP, FAKE_IP = "10.250.8.1", "10.250.8.99"
A_ADDRESS, B_ADDRESS = "10.252.0.1", "10.252.0.2"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True,
                          timeout=30)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.fail("this test builds network namespaces: it needs root")
    suffix = secrets.token_hex(2)
    a, b = f"mqtca{suffix}", f"mqtcb{suffix}"
    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
        ip("link", "add", "v0", "netns", a, "type", "veth", "peer", "name", "v1", "netns", b)
        for ns, dev, address in ((a, "v0", A_ADDRESS), (b, "v1", B_ADDRESS)):
            ip("netns", "exec", ns, "sh", "-c", f"ip link set lo up && ip addr add "
               f"{address}/24 dev {dev} && ip link set {dev} up")
        yield a, b
    finally:
        for ns in (a, b):
            kill_pids(netns_pids(ns))
            ip("netns", "del", ns, check=False)


def checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def frame(mac: str, port: int, payload: bytes) -> bytes:
    """An Ethernet frame from a made-up host to the guest: UDP to GUEST_IP:port."""
    udp = struct.pack("!HHHH", 4000, port, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         bytes(map(int, FAKE_IP.split("."))),
                         bytes(map(int, GUEST_IP.split("."))))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return (bytes.fromhex(mac.replace(":", "")) + bytes.fromhex("020000000099")
            + b"\x08\x00" + header + udp)


SEND = """
import socket, sys
group, port, via, data = sys.argv[1], int(sys.argv[2]), sys.argv[3], bytes.fromhex(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(via))
s.sendto(data, (group, port))
"""

JOIN = """
import socket, sys
group, port, on = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((group, port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton(group) + socket.inet_aton(on))
s.setsockopt(socket.IPPROTO_IP, 49, 0)  # IP_MULTICAST_ALL: only what arrives on 'on'
print("joined", flush=True)
s.settimeout(60)
data = s.recv(65535)
print("got", data.hex(), flush=True)
"""


def test_segment_on_lo_ignores_the_group_on_other_interfaces(namespaces, tmp_path):
    a, b = namespaces
    home = Path(tempfile.mkdtemp(prefix="maqet-confined-"))
    env = {**os.environ, "MAQET_HOME": str(home), "PYTHONPATH": str(REPO)}
    try:
        ctx = engine.EngineContext.for_home(str(home))
        seg = engine.apply_network(ctx, engine.load_network(ctx, definition={
            "name": f"seg-{secrets.token_hex(3)}", "type": "segment"})).data["spec"]
        group, port = seg["group"], str(seg["port"])
        definition = tmp_path / "vm.yml"
        definition.write_text(yaml.safe_dump(guest.guest_definition(
            "a", guest.ensure_guest(), network=[{"network": seg["name"]}])))
        subprocess.run(["ip", "netns", "exec", a, sys.executable, "-m", "maqet_engine",
                        "apply", "-d", str(definition), "--state", "running"],
                       env=env, check=True, capture_output=True, timeout=120)
        shell = GuestShell(ctx, "a")
        shell.wait_ready()
        shell.configure(f"{GUEST_IP}/24")
        mac = engine.show(ctx, "a").data["networks"][0]["mac"]

        def no_ports() -> int:
            out = shell.check("sleep 1; awk '/^Udp:/ { n++; if (n == 2) print \"NP=\" $3 }' "
                              "/proc/net/snmp")
            return int(out.split("NP=")[1].split()[0])

        before = no_ports()

        joiner = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-c", JOIN,
                                   group, port, A_ADDRESS], stdout=subprocess.PIPE, text=True)
        try:
            assert joiner.stdout is not None and joiner.stdout.readline().strip() == "joined"
            leak = frame(mac, 9999, b"MAQET-LEAK")
            subprocess.run(["ip", "netns", "exec", b, sys.executable, "-c", SEND, group, port,
                            B_ADDRESS, leak.hex()], check=True, timeout=30)
            out, _ = joiner.communicate(timeout=30)
        finally:
            if joiner.poll() is None:
                joiner.kill()
                joiner.wait()
        assert out.split() == ["got", leak.hex()], "the frame did not even reach A's veth"
        assert no_ports() == before, "the segment on lo took a datagram from the veth"
        subprocess.run(["ip", "netns", "exec", a, sys.executable, "-c", SEND, group, port,
                        "127.0.0.1", frame(mac, 9998, b"MAQET-OK").hex()], check=True,
                       timeout=30)
        assert no_ports() == before + 1, "the frame sent on lo did not reach the guest"
    finally:
        kill_pids(netns_pids(a))
        shutil.rmtree(home, ignore_errors=True)
