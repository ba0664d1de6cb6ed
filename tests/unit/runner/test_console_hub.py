"""Console viewers (runner/console.py) through the runner's real control server and the
sync client, with a stand-in for the serial drain (its listener hook and write). The
real console under a pty: tests/integration/test_guest_agent.py."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from control_server import ServerThread  # tests/support

from maqet_engine import constants as C
from maqet_engine.control.client import StreamCall, stream
from maqet_engine.errors import RuntimeFailure
from maqet_engine.ipc import protocol
from maqet_engine.runner.console import ConsoleHub
from maqet_engine.runner.server import Stream


class FakeSerial:
    """What ConsoleHub uses of SerialDrain."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[bytes], None]] = []
        self.written = bytearray()
        self.wrote = threading.Event()

    def add_listener(self, listener: Callable[[bytes], None]) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: Callable[[bytes], None]) -> None:
        self.listeners.remove(listener)

    async def write(self, data: bytes) -> None:
        self.written += data
        self.wrote.set()

    def output(self, data: bytes) -> None:
        for listener in list(self.listeners):
            listener(data)


class Console(ServerThread):
    streams = frozenset({"console"})

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.serial = FakeSerial()

    def started(self) -> None:
        self.hub = ConsoleHub(self.serial)  # type: ignore[arg-type]

    async def dispatch(self, request: protocol.Request, stream: Stream | None) -> Any:
        assert stream is not None and request.method == "console"
        return await self.hub.attach(request.params, stream)

    def run(self, function: Callable[[], None]) -> None:
        """Run ``function`` in the runner's loop and wait for it."""
        async def call() -> None:
            function()
        asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def viewers(self) -> int:
        return len(self.serial.listeners)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with Console(tmp_path / "ctl.sock") as c:
        yield c


def attach(console: Console, write: bool = True) -> tuple[StreamCall, dict[str, Any]]:
    call = stream(console.path, "console", write=write)
    kind, ready = call.receive(10)
    assert kind == "ready"
    return call, ready


def received(call: StreamCall) -> bytes:
    kind, value = call.receive(10)
    assert kind == "data"
    return base64.b64decode(value)


def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("condition not reached in 5 s")


def test_every_viewer_reads_and_one_types(console: Console):
    first, ready1 = attach(console)
    second, ready2 = attach(console)
    assert ready1 == {"write": True, "writer_pid": os.getpid()}
    assert ready2 == {"write": False, "writer_pid": os.getpid()}  # read-only, told who types
    wait_for(lambda: console.viewers() == 2)
    console.run(lambda: console.serial.output(b"login: "))
    assert received(first) == received(second) == b"login: "
    second.send("data", base64.b64encode(b"ignored").decode())
    first.send("data", base64.b64encode(b"root\r").decode())
    assert console.serial.wrote.wait(10)
    wait_for(lambda: bytes(console.serial.written) == b"root\r")
    first.close()  # detaching frees the keyboard
    wait_for(lambda: console.viewers() == 1)
    third, ready3 = attach(console)
    assert ready3["write"] is True
    second.close()
    third.close()


def test_the_console_closing_ends_every_viewer(console: Console):
    call, _ = attach(console)
    wait_for(lambda: console.viewers() == 1)
    console.run(lambda: console.serial.output(b""))  # QEMU exited
    assert call.receive(10) == ("result", {"reason": "the console closed (QEMU exited)"})


def test_a_viewer_too_far_behind_is_detached(console: Console):
    call, _ = attach(console, write=False)
    wait_for(lambda: console.viewers() == 1)
    # Output arrives faster than this viewer reads: more than the backlog at once.
    chunk = b"x" * 65536
    console.run(lambda: [console.serial.output(chunk)
                         for _ in range(C.CONSOLE_VIEWER_BACKLOG // len(chunk) + 2)])
    with pytest.raises(RuntimeFailure, match="fell more than"):
        while True:
            call.receive(10)
    wait_for(lambda: console.viewers() == 0)
