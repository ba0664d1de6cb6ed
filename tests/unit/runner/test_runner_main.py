"""The runner's entry point: its own small argument parser and the launch data on
stdin. No QEMU."""

from __future__ import annotations

import io
import json

import pytest

from maqet_engine import constants as C
from maqet_engine.errors import UsageError
from maqet_engine.runner.__main__ import parse_args, read_launch


def test_parse_args_pairs():
    assert parse_args(["--name", "vm1", "--ready-fd", "7", "--data", "/d", "--runtime", "/r",
                       "--config", "/c"]) == {"name": "vm1", "ready_fd": "7", "data": "/d",
                                              "runtime": "/r", "config": "/c"}
    assert parse_args(["--name", "vm1"]) == {"name": "vm1"}
    for bad in (["--name"], ["--ready-fd", "3"], ["--name", "x", "--nope", "1"], ["vm1", "x"]):
        with pytest.raises(UsageError):
            parse_args(bad)


def test_read_launch():
    argv = ["qemu-system-x86_64", "-qmp", "unix:/x,server=on,wait=off"]
    assert read_launch(io.BytesIO(json.dumps({"qemu_argv": argv}).encode())) == argv
    assert read_launch(io.BytesIO(b"")) is None  # /dev/null: re-adopt only
    assert read_launch(None) is None
    for bad in (b"{", b"[]", b'{"qemu_argv": []}', b'{"qemu_argv": [1]}', b'{"x": 1}',
                b" " * (C.IPC_MAX_MESSAGE_BYTES + 1) + b"{}"):
        with pytest.raises(UsageError):
            read_launch(io.BytesIO(bad))
