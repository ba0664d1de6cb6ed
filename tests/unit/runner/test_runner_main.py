"""The runner's entry point: its own small argument parser, the launch data on stdin,
and what the runner process imports (no OpenSSL, no spec package). No QEMU."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest

from maqet_engine import constants as C
from maqet_engine.errors import UsageError
from maqet_engine.runner.__main__ import parse_args, read_launch


def test_parse_args_pairs():
    assert parse_args(["--name", "vm1", "--ready-fd", "7", "--data", "/d", "--runtime", "/r",
                       "--config", "/c"]) == {"name": "vm1", "ready_fd": "7", "data": "/d",
                                              "runtime": "/r", "config": "/c"}
    assert parse_args(["--name", "vm1"]) == {"name": "vm1"}
    assert parse_args(["--name", "vm1", "--op", "a1b2", "--log-format", "json"]) == {
        "name": "vm1", "op": "a1b2", "log_format": "json"}
    for bad in (["--name"], ["--ready-fd", "3"], ["--name", "x", "--nope", "1"], ["vm1", "x"],
                ["--name", "x", "--log-format", "xml"], ["--name", "x", "--op", "a b"]):
        with pytest.raises(UsageError):
            parse_args(bad)


def test_read_launch():
    argv = ["qemu-system-x86_64", "-chardev", "socket,id=maqet-qmp,fd=5,server=on,wait=off"]
    launch = read_launch(io.BytesIO(json.dumps({"qemu_argv": argv, "qmp_fd": 5}).encode()))
    assert launch is not None and (launch.argv, launch.qmp_fd) == (argv, 5)
    assert launch.agent_fd is None and launch.inherited == (5,)
    with_agent = read_launch(io.BytesIO(json.dumps(
        {"qemu_argv": argv, "qmp_fd": 5, "agent_fd": 6}).encode()))
    assert with_agent is not None and with_agent.inherited == (5, 6)
    assert read_launch(io.BytesIO(b"")) is None  # /dev/null: re-adopt only
    assert read_launch(None) is None
    for bad in (b"{", b"[]", b'{"qemu_argv": []}', b'{"qemu_argv": [1]}', b'{"x": 1}',
                b'{"qemu_argv": ["q"]}', b'{"qemu_argv": ["q"], "qmp_fd": -1}',
                b'{"qemu_argv": ["q"], "qmp_fd": 5, "agent_fd": "6"}',
                b'{"qemu_argv": ["q"], "qmp_fd": true}',
                b" " * (C.IPC_MAX_MESSAGE_BYTES + 1) + b"{}"):
        with pytest.raises(UsageError):
            read_launch(io.BytesIO(bad))


def test_read_launch_of_named_networks():
    """Tap fds handed on, segments to confine, networks' hashes to record."""
    data = {"qemu_argv": ["q"], "qmp_fd": 5, "fds": [7, 8],
            "multicast": [["239.255.1.2", 20001, 1]], "started_networks": '{"lab": "h"}'}
    launch = read_launch(io.BytesIO(json.dumps(data).encode()))
    assert launch is not None
    assert (launch.fds, launch.multicast, launch.started_networks) == (
        [7, 8], [("239.255.1.2", 20001, 1)], '{"lab": "h"}')
    assert launch.inherited == (5, 7, 8)  # what QEMU inherits: QMP's socket, the taps
    with_agent = read_launch(io.BytesIO(json.dumps({**data, "agent_fd": 6}).encode()))
    assert with_agent is not None and with_agent.inherited == (5, 6, 7, 8)
    plain = read_launch(io.BytesIO(b'{"qemu_argv": ["q"], "qmp_fd": 5}'))
    assert plain is not None and (plain.fds, plain.multicast, plain.started_networks) == (
        [], [], None)
    for bad in ({"fds": [-1]}, {"fds": "7"}, {"fds": [True]}, {"multicast": [["g", 1]]},
                {"multicast": [[1, 2, 3]]}, {"multicast": "x"}, {"started_networks": 1}):
        with pytest.raises(UsageError):
            read_launch(io.BytesIO(json.dumps({"qemu_argv": ["q"], "qmp_fd": 5,
                                               **bad}).encode()))


def test_runner_process_has_no_openssl_and_no_spec(tmp_path):
    """Run the entry point as ``python -m`` does (a VM that does not exist: it exits at
    once), then import everything the runner serves with, and list what got loaded."""
    script = textwrap.dedent("""
        import json, runpy, sys
        sys.argv = ["maqet_engine.runner", "--name", "nosuchvm"]
        try:
            runpy.run_module("maqet_engine.runner", run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            code = exit.code
        import maqet_engine.runner.handlers, maqet_engine.runner.server, maqet_engine.runner.vm
        from qemu.qmp import QMPClient
        QMPClient("x")
        ssl = sys.modules["ssl"]
        try:
            ssl.SSLContext()
            refused = False
        except RuntimeError:
            refused = True
        print(json.dumps({"code": code, "modules": sorted(sys.modules), "refused": refused}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={"MAQET_HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
                                 "PYTHONPATH": ":".join(sys.path)},
                            stdin=subprocess.DEVNULL, timeout=60, check=True)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["code"] == C.EXIT_NOT_FOUND  # VMNotFound, reported like any runner error
    assert report["refused"]
    loaded = set(report["modules"])
    forbidden = {"_ssl", "_hashlib", "argparse", "dataclasses", "maqet_engine.definition"}
    assert not loaded & forbidden, sorted(loaded & forbidden)
    assert "asyncio" in loaded and "qemu.qmp" in loaded
