"""Streams on the control socket: the runner's real server (in a thread's event loop)
and the sync client's StreamCall, with stream handlers written here. No QEMU.

A stream keeps its connection between the request and the reply for ``{kind: value}``
messages both ways; the reply ends the request and the connection. Messages obey the
socket's line limits; a client that hangs up is seen by the handler (receive() is None).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from control_server import ServerThread  # tests/support

from maqet_engine import constants as C
from maqet_engine.control.client import RunnerClient, stream
from maqet_engine.errors import RunnerUnavailable, UsageError
from maqet_engine.ipc import protocol
from maqet_engine.runner.server import Stream


class Runner(ServerThread):
    """A ControlServer whose handlers are the methods below, in a thread."""

    streams = frozenset({"echo", "big", "fail"})

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hung_up = threading.Event()
        self.received: list[tuple[str, Any]] = []

    async def dispatch(self, request: protocol.Request, stream: Stream | None) -> Any:
        if stream is None:
            return {"plain": request.method}
        return await getattr(self, request.method)(request.params, stream)

    async def echo(self, params: dict[str, Any], stream: Stream) -> Any:
        """Sends ready, then each data message back doubled, until end."""
        await stream.send("ready")
        count = 0
        while (message := await stream.receive()) is not None:
            kind, value = message
            self.received.append(message)
            if kind == "end":
                return {"count": count}
            count += 1
            await stream.send("data", value * 2)
        self.hung_up.set()
        return {}

    async def big(self, params: dict[str, Any], stream: Stream) -> Any:
        await stream.send("data", "x" * params["size"])
        return {}

    async def fail(self, params: dict[str, Any], stream: Stream) -> Any:
        await stream.send("ready")
        raise UsageError("no such guest file")


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    with Runner(tmp_path / "ctl.sock") as r:
        yield r


def test_a_stream_carries_messages_both_ways_until_its_reply(runner: Runner):
    with stream(runner.path, "echo") as call:
        assert call.receive(10) == ("ready", True)
        for word in ("a", "bc"):
            call.send("data", word)
            assert call.receive(10) == ("data", word * 2)
        call.send("end")
        assert call.receive(10) == ("result", {"count": 2})
        assert call.done
    assert runner.received == [("data", "a"), ("data", "bc"), ("end", True)]


def test_plain_requests_are_unchanged(runner: Runner):
    with RunnerClient(runner.path, timeout=10) as client:
        assert client.call("ping") == {"plain": "ping"}
        assert client.call("status") == {"plain": "status"}  # the connection goes on


def test_a_stream_error_is_its_reply_raised_as_itself(runner: Runner):
    with stream(runner.path, "fail") as call:
        assert call.receive(10) == ("ready", True)
        with pytest.raises(UsageError, match="no such guest file"):
            call.receive(10)


def test_the_handler_sees_the_client_hang_up(runner: Runner):
    call = stream(runner.path, "echo")
    assert call.receive(10) == ("ready", True)
    call.close()
    assert runner.hung_up.wait(10)


def test_stream_messages_obey_the_line_limits(runner: Runner):
    too_long = "x" * C.IPC_MAX_REQUEST_BYTES
    with stream(runner.path, "echo") as call:
        call.receive(10)
        with pytest.raises(protocol.ProtocolError):
            call.send("data", too_long)  # refused before sending
        call.send("data", "y" * (C.IPC_STREAM_CLIENT_CHUNK * 4 // 3))  # what clients send
        kind, value = call.receive(10)
        assert kind == "data" and len(value) == C.IPC_STREAM_CLIENT_CHUNK * 8 // 3
    # The runner cannot send a line over its reply limit: the handler's error is the
    # reply instead.
    with stream(runner.path, "big", size=C.IPC_MAX_MESSAGE_BYTES) as call, \
            pytest.raises(protocol.ProtocolError, match="exceeds the IPC limit"):
        call.receive(10)


def test_a_stream_to_no_runner_is_runner_unavailable(tmp_path: Path):
    with pytest.raises(RunnerUnavailable):
        stream(tmp_path / "nobody.sock", "echo")


def test_stream_message_format():
    assert protocol.encode_stream("data", "QUJD") == b'{"data":"QUJD"}\n'
    assert protocol.decode_stream(b'{"end": true}\n') == ("end", True)
    for bad in (b"[]", b'{"a": 1, "b": 2}', b"{}", b"nope"):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode_stream(bad)
    assert protocol.decode_stream_reply(b'{"stdout": "eA=="}', 7) == ("stdout", "eA==")
    assert protocol.decode_stream_reply(b'{"id": 7, "result": {"size": 1}}', 7) == (
        "result", {"size": 1})
    with pytest.raises(UsageError, match="nope"):
        protocol.decode_stream_reply(
            b'{"id": 7, "error": {"type": "UsageError", "message": "nope"}}', 7)
