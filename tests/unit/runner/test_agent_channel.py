"""The runner's guest agent channel against a scripted qemu-ga on a Unix socket (no QEMU):
keeping the stream in step (guest-sync, discarding what is not its id), the port's
events, and the bound on every request. The real agent: tests/integration/test_guest_agent.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.errors import AgentCommandError, AgentUnavailable
from maqet_engine.runner import agent as agent_module
from maqet_engine.runner.agent import ABSENT, CONNECTED, SYNCING, AgentChannel

Reply = Callable[[dict[str, Any]], Awaitable[list[bytes]]]


class FakeAgent:
    """A Unix socket server speaking qemu-ga's protocol, one client; ``answer`` decides
    what each request gets (a list of raw lines, maybe none, maybe late)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[dict[str, Any]] = []
        self.answer: Reply = self.normal
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None

    @staticmethod
    async def normal(request: dict[str, Any]) -> list[bytes]:
        if request["execute"] == "guest-sync":
            return [json.dumps({"return": request["arguments"]["id"]}).encode()]
        if request["execute"] == "guest-ping":
            return [b'{"return": {}}']
        return [json.dumps({"error": {"class": "CommandNotFound",
                                      "desc": f"The command {request['execute']} has not "
                                              "been found"}}).encode()]

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        while line := await reader.readline():
            request = json.loads(line)
            self.requests.append(request)
            for out in await self.answer(request):
                writer.write(out + b"\n")
            await writer.drain()

    def send(self, raw: bytes) -> None:
        assert self._writer is not None
        self._writer.write(raw)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            self._server.close()


def run(test: Callable[[FakeAgent, AgentChannel], Awaitable[None]], tmp_path: Path, *,
        port_open: bool | None, answer: Reply | None = None) -> None:
    async def main() -> None:
        fake = FakeAgent(tmp_path / "qga.sock")
        if answer is not None:
            fake.answer = answer
        await fake.start()
        channel = AgentChannel(fake.path, logging.getLogger("test"), port_open=port_open)
        await channel.start()
        try:
            await test(fake, channel)
        finally:
            await channel.close()
            await fake.close()

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.fixture(autouse=True)
def _fast_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter sync attempts than the runner's (the protocol is the same)."""
    monkeypatch.setattr(agent_module.C, "AGENT_SYNC_FIRST_S", 0.05)
    monkeypatch.setattr(agent_module.C, "AGENT_SYNC_MAX_S", 0.2)


def test_a_closed_port_waits_for_the_guest_then_syncs(tmp_path: Path):
    async def test(fake: FakeAgent, channel: AgentChannel) -> None:
        assert channel.state == ABSENT and fake.requests == []  # nothing sent into it
        request = asyncio.ensure_future(channel.request("guest-ping", timeout=5))
        await asyncio.sleep(0.05)
        assert not request.done()
        channel.port_changed(True)
        assert await request == {}
        assert channel.state == CONNECTED and channel.last_sync is not None
        assert [r["execute"] for r in fake.requests] == ["guest-sync", "guest-ping"]

    run(test, tmp_path, port_open=False)


def test_no_agent_is_a_clear_error_within_the_timeout(tmp_path: Path):
    async def test(fake: FakeAgent, channel: AgentChannel) -> None:
        started = time.monotonic()
        with pytest.raises(AgentUnavailable, match="qemu-ga is not running in the guest"):
            await channel.request("guest-ping", timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 1.0

    run(test, tmp_path, port_open=False)


def test_sync_discards_noise_and_replies_that_are_not_its_id(tmp_path: Path):
    async def noisy(request: dict[str, Any]) -> list[bytes]:
        if request["execute"] == "guest-sync":  # a late reply, garbage, then the id
            return [b'{"return": {"stale": true}}', b"\xff{not json", b'[1, 2]',
                    b'{"return": 12345}', *await FakeAgent.normal(request)]
        return await FakeAgent.normal(request)

    async def test(fake: FakeAgent, channel: AgentChannel) -> None:
        fake.answer = noisy
        channel.port_changed(True)
        assert await channel.request("guest-ping", timeout=5) == {}

    run(test, tmp_path, port_open=False)


def test_a_late_reply_is_never_taken_for_the_next_answer(tmp_path: Path):
    """A request that timed out leaves the stream out of step: the next one syncs first,
    and the late reply is discarded instead of answering it."""
    async def slow_first(request: dict[str, Any]) -> list[bytes]:
        if request["execute"] == "guest-get-time":
            await asyncio.sleep(0.4)
            return [b'{"return": "late"}']
        return await FakeAgent.normal(request)

    async def test(fake: FakeAgent, channel: AgentChannel) -> None:
        fake.answer = slow_first
        channel.port_changed(True)
        with pytest.raises(AgentUnavailable, match="did not answer guest-get-time within 0.2 s"):
            await channel.request("guest-get-time", timeout=0.2)
        assert channel.state == SYNCING
        assert await channel.request("guest-ping", timeout=5) == {}
        executed = [r["execute"] for r in fake.requests]
        assert executed[-2:] == ["guest-sync", "guest-ping"]

    run(test, tmp_path, port_open=False)


def test_the_port_closing_fails_the_request_on_the_wire_at_once(tmp_path: Path):
    on_wire = asyncio.Event()

    async def never(request: dict[str, Any]) -> list[bytes]:
        if request["execute"] == "guest-sync":
            return await FakeAgent.normal(request)
        on_wire.set()
        return []  # qemu-ga is going down: no reply

    async def test(fake: FakeAgent, channel: AgentChannel) -> None:
        fake.answer = never
        channel.port_changed(True)
        request = asyncio.ensure_future(channel.request("guest-exec", {"path": "reboot"},
                                                        timeout=20))
        await asyncio.wait_for(on_wire.wait(), 5)  # the agent has it: it is on the wire
        started = time.monotonic()
        channel.port_changed(False)  # QMP VSERPORT_CHANGE open=false: a reboot
        with pytest.raises(AgentUnavailable, match="closed its port before answering"):
            await request
        assert time.monotonic() - started < 1.0
        assert channel.state == ABSENT and channel.epoch == 1

    run(test, tmp_path, port_open=False)


def test_an_unknown_port_is_tried_a_few_times_then_absent(tmp_path: Path):
    """A re-adopted QEMU: whether the guest has the port open is unknown, so the runner
    tries to sync a bounded number of times, then waits for the port's next event."""
    async def silent(request: dict[str, Any]) -> list[bytes]:
        return []

    async def test(fake: FakeAgent, channel: AgentChannel) -> None:
        for _ in range(100):
            if channel.state == ABSENT:
                break
            await asyncio.sleep(0.02)
        assert channel.state == ABSENT
        assert [r["execute"] for r in fake.requests] == ["guest-sync"] * 3
        assert "did not answer guest-sync" in channel.reason

    run(test, tmp_path, port_open=None, answer=silent)


def test_agent_errors_are_agent_command_errors(tmp_path: Path):
    async def test(fake: FakeAgent, channel: AgentChannel) -> None:
        channel.port_changed(True)
        with pytest.raises(AgentCommandError) as err:
            await channel.request("guest-frobnicate", timeout=5)
        assert err.value.error_class == "CommandNotFound"
        assert "guest-frobnicate" in str(err.value)
        assert channel.state == CONNECTED  # an answer is in step

    run(test, tmp_path, port_open=False)


def test_requests_are_serialised(tmp_path: Path):
    """qemu-ga's replies carry no id: one request at a time on the wire."""
    in_flight = 0
    most = 0

    async def counting(request: dict[str, Any]) -> list[bytes]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return await FakeAgent.normal(request)

    async def test(fake: FakeAgent, channel: AgentChannel) -> None:
        fake.answer = counting
        channel.port_changed(True)
        replies = await asyncio.gather(*(channel.request("guest-ping", timeout=5)
                                         for _ in range(10)))
        assert replies == [{}] * 10 and most == 1

    run(test, tmp_path, port_open=False)


def test_view_for_status(tmp_path: Path):
    async def test(fake: FakeAgent, channel: AgentChannel) -> None:
        view = channel.view()
        assert view["state"] == ABSENT and view["last_sync"] is None and view["reason"]
        channel.port_changed(True)
        await channel.request("guest-ping", timeout=5)
        view = channel.view()
        assert view["state"] == CONNECTED and view["reason"] is None
        assert abs(view["last_sync"] - time.time()) < 5

    run(test, tmp_path, port_open=False)
