"""The real QEMU accepts a build_argv command line with every storage and network
feature it can use unprivileged (tap and bridge need root and host setup), and the guest
agent's channel."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.control.spawn import bind_qmp_socket
from maqet_engine.definition import build_argv, parse_spec
from maqet_engine.paths import resolve_paths

pytestmark = pytest.mark.qemu

QEMU = "qemu-system-x86_64"
EXIT_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _QMP:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(EXIT_TIMEOUT_S)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("r", encoding="utf-8")
        assert "QMP" in json.loads(self.reader.readline())

    def execute(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = json.loads(self.reader.readline())
            if "return" in reply:
                return reply["return"]
            assert "error" not in reply, reply

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.mark.parametrize(("machine", "memory"), [("q35", 64), (None, "65540K")],
                         ids=["q35", "default-machine-unaligned-memory"])
def test_qemu_accepts_the_command_line(tmp_path: Path, machine: str | None, memory: Any):
    defdir = tmp_path / "def"
    (defdir / "share,odd").mkdir(parents=True)
    (defdir / "cd.iso").write_bytes(b"\0" * 2048)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(defdir / "base.qcow2"), "16M"],
                   check=True)
    ssh_port = _free_port()
    raw = {
        "name": "argv-check", "machine": machine, "memory": memory, "cpu": 1, "accel": "tcg",
        "storage": [
            {"name": "root", "type": "qcow2", "size": "16M"},
            {"name": "data", "type": "raw", "size": "1M", "interface": "ide"},
            {"name": "data2", "type": "qcow2", "size": "1M", "interface": "ide"},
            {"name": "s1", "type": "qcow2", "size": "1M", "interface": "scsi"},
            {"name": "base", "type": "qcow2", "file": str(defdir / "base.qcow2"),
             "interface": "scsi", "readonly": True},
            {"name": "cd", "type": "cdrom", "file": "cd.iso"},
            {"name": "src", "type": "virtfs", "path": "share,odd", "readonly": True},
        ],
        "network": [
            {"type": "user", "forward": [{"host": ssh_port, "guest": 22},
                                         {"host": _free_port(), "guest": 53, "protocol": "udp"}]},
            {"type": "user", "model": "e1000", "mac": "52:54:00:12:34:56"},
        ],
        "agent": True,
        "arguments": ["-S"],
    }
    # A home with a comma, a space and non-ASCII: QEMU option values must be escaped.
    with tempfile.TemporaryDirectory(prefix="mq, é-") as home:  # short: AF_UNIX path limit
        paths = resolve_paths({"MAQET_HOME": home})
        spec = parse_spec(raw, base_dir=defdir, paths=paths)
        data = paths.vm_data(spec.name)
        data.root.mkdir(parents=True)
        for entry in spec.data["storage"]:
            if entry["type"] in ("qcow2", "raw") and not Path(entry["file"]).exists():
                subprocess.run(["qemu-img", "create", "-q", "-f", entry["type"], entry["file"],
                                str(entry["size"])], check=True)
        runtime = paths.ensure_runtime(1)
        # As the spawner does: bind the QMP socket first and build the command line
        # around the listening fd, so connecting cannot race QEMU's start-up.
        listener = bind_qmp_socket(runtime.qmp_socket)
        agent = bind_qmp_socket(runtime.agent_socket)  # the guest agent's, likewise
        argv = build_argv(spec, runtime=runtime, data=data, accel="tcg",
                          qmp_fd=listener.fileno(), agent_fd=agent.fileno())
        argv[0] = shutil.which(QEMU) or QEMU
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                pass_fds=(listener.fileno(), agent.fileno()))
        listener.close()
        agent.close()
        try:
            qmp = _QMP(runtime.qmp_socket)
            try:
                qmp.execute("qmp_capabilities")
                assert qmp.execute("query-status")["status"] == "prelaunch"
                nodes = {n["node-name"]: n for n in qmp.execute("query-named-block-nodes",
                                                                flat=True)}
                assert {"root", "data", "data2", "s1", "base", "cd"} <= set(nodes)
                assert nodes["base"]["ro"] and nodes["cd"]["ro"] and not nodes["root"]["ro"]
                usernet = qmp.execute("human-monitor-command", **{"command-line": "info usernet"})
                forwards = [line.split() for line in usernet.splitlines() if "HOST_FORWARD" in line]
                assert ["127.0.0.1", str(ssh_port)] in [f[2:4] for f in forwards], usernet
                chardevs = {c["label"]: c for c in qmp.execute("query-chardev")}
                assert "maqet-qga" in chardevs  # the agent's port, on the spawner's socket
                port = qmp.execute("qom-get", path="/machine/peripheral/maqet.qga0",
                                   property="name")
                assert port == "org.qemu.guest_agent.0"
                qmp.execute("quit")
            finally:
                qmp.close()
            assert proc.wait(timeout=EXIT_TIMEOUT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        assert data.serial_log.exists()
