"""The runner's control socket and QMP helpers, against real QEMU and the guest."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
from guest import wait_marker

from maqet_engine import constants as C
from maqet_engine.engine import lifecycle
from maqet_engine.errors import QMPCommandError, StateConflict, UsageError

pytestmark = pytest.mark.qemu


def raw_exchange(path: Path, payload: bytes, *, timeout: float = 10.0) -> list[bytes]:
    """Send raw bytes, then read reply lines until the runner closes or stays quiet."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # EOF after our bytes: the runner answers, then closes
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.splitlines()


@pytest.fixture
def running(vms):
    name = vms.define()
    with vms.store() as store:
        lifecycle.ensure_running(vms.paths, store, name)
    return name


def test_garbage_on_the_control_socket_gets_errors_and_never_kills_the_runner(vms, running):
    import json

    ctl = vms.paths.vm_runtime(vms.record(running).id).control_socket
    replies = raw_exchange(ctl, b"garbage\n{}\n[1,2]\n\xff\xfe\n"
                           b'{"id": 7, "method": "nope"}\n'
                           b'{"id": 8, "method": "qmp", "params": {"command": 5}}\n'
                           b'{"id": 9, "method": "stop", "params": {"timeout": "soon"}}\n'
                           b'{"id": 10, "method": "ping", "params": {"x": 1}}\n'
                           b'{"id": 11, "method": "ping"}\n')
    decoded = [json.loads(line) for line in replies]
    assert [("error" in r) for r in decoded] == [True] * 8 + [False]
    assert decoded[4]["id"] == 7 and "unknown method" in decoded[4]["error"]["message"]
    assert decoded[-1]["result"]["pong"] is True
    # Oversized message without a newline: one error reply, that connection closed.
    big = raw_exchange(ctl, b"{" + b"x" * (C.IPC_MAX_REQUEST_BYTES + 10))
    assert len(big) == 1 and b"exceeds the IPC limit" in big[0]
    # Unterminated short message.
    assert b"not terminated" in raw_exchange(ctl, b'{"id": 1')[0]
    with vms.store() as store:
        assert lifecycle.call(vms.paths, store, running, "ping")["pong"] is True
        assert store.require_vm(running).status.value == "running"


def test_control_socket_is_private(vms, running):
    rt = vms.paths.vm_runtime(vms.record(running).id)
    assert rt.root.stat().st_mode & 0o777 == 0o700
    assert rt.control_socket.stat().st_mode & 0o777 == 0o600
    with socket.socket(socket.AF_UNIX) as sock:  # SO_PEERCRED is what the runner checks
        sock.connect(str(rt.control_socket))
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        assert uid == 0 or uid > 0


def test_qmp_commands_and_errors(vms, running):
    with vms.store() as store:
        status = lifecycle.call(vms.paths, store, running, "qmp", command="query-status")
        assert status["status"] == "running"
        name = lifecycle.call(vms.paths, store, running, "qmp", command="query-name")
        assert name == {"name": running}
        with pytest.raises(QMPCommandError) as info:
            lifecycle.call(vms.paths, store, running, "qmp", command="no-such-command")
        assert info.value.error_class == "CommandNotFound"
        assert info.value.exit_code == C.EXIT_RUNTIME
        with pytest.raises(QMPCommandError) as info:
            lifecycle.call(vms.paths, store, running, "qmp", command="device_del",
                           arguments={"id": "nothing-here"})
        assert info.value.error_class == "DeviceNotFound"


def test_keys_and_type_reach_the_guest_shell(vms, running):
    """The guest's /init runs a shell on tty1 (the keyboard's VT) whose output goes to the
    serial console, and holds tty1 open from before the marker: keys sent right after the
    marker are queued for that shell, and what it prints is read back from the serial log."""
    paths = vms.paths
    offset = wait_marker(paths, running)
    with vms.store() as store:
        def call(method: str, **params):
            return lifecycle.call(paths, store, running, method, **params)

        text = "echo Typed-$((6*7))_OK!\n"  # the echo of the keys goes to tty1, not ttyS0
        assert call("type", text=text) == {"sent": len(text)}
        offset = call("serial_wait", pattern=r"Typed-42_OK!", since=offset, timeout=20)["offset"]
        # keys: a partial word, then a chord (ctrl-u wipes the line), then the real command.
        call("type", text="echo wr$((0+1))ong")
        call("keys", keys=["ctrl-u"])
        call("type", text="echo key-$((5+5))")
        call("keys", keys=["ret"])
        match = call("serial_wait", pattern=r"^key-10$|wr1ong", since=offset, timeout=20)
        assert match["match"] == "key-10"
        with pytest.raises(UsageError):
            call("keys", keys=["ctrl-nosuchkey"])
        with pytest.raises(UsageError):
            call("type", text="caf\u00e9")


def test_screendump_writes_a_valid_png(vms, running, tmp_path):
    out = tmp_path / "screen.png"
    with vms.store() as store:
        reply = lifecycle.call(vms.paths, store, running, "screendump", path=str(out))
        assert reply == {"path": str(out), "format": "png"}
        with pytest.raises(UsageError):
            lifecycle.call(vms.paths, store, running, "screendump", path="relative.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 0 and height > 0


def test_runner_process_maps_no_openssl(vms, running):
    """The runner only uses Unix sockets: OpenSSL (~4.5 MiB per runner) stays unloaded."""
    pid = vms.record(running).runner_pid
    with open(f"/proc/{pid}/maps") as fh:
        mapped = {line.split()[-1] for line in fh if "/" in line}
    assert not [m for m in mapped if "libssl" in m or "libcrypto" in m or "/_ssl." in m]


def test_ipc_to_a_stopped_vm_is_a_state_conflict(vms):
    name = vms.define()
    with vms.store() as store, pytest.raises(StateConflict):
        lifecycle.call(vms.paths, store, name, "ping")
