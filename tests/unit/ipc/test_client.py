"""The sync client (control/client.py) never hangs and survives a crowded runner: real
Unix sockets play the runner (a listener that does not accept, one that answers
RunnerBusy, one that never answers). No QEMU, no mocks."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from maqet_engine import constants as C
from maqet_engine.control.client import RunnerClient
from maqet_engine.errors import OperationTimeout, RunnerUnavailable
from maqet_engine.ipc import protocol


def full_backlog(path: Path) -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose backlog is full (nobody accepts): (listener, queued clients)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(0)
    listener.settimeout(10)  # a test never blocks without a bound
    queued: list[socket.socket] = []
    while True:
        sock = socket.socket(socket.AF_UNIX)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
        except BlockingIOError:
            sock.close()
            return listener, queued
        queued.append(sock)


@contextlib.contextmanager
def fake_runner(path: Path, *serve: Callable[[socket.socket], None]) -> Iterator[list[bytes]]:
    """Accept one connection per ``serve`` function, in order, in a thread; yields the
    request lines the functions read (they append to it)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(8)
    listener.settimeout(10)
    seen: list[bytes] = []
    stopping = threading.Event()

    def run() -> None:
        for handler in serve:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(10)
            with conn:
                if stopping.is_set():
                    return
                handler(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stopping.set()
        with socket.socket(socket.AF_UNIX) as wake:  # ends a pending accept()
            with contextlib.suppress(OSError):
                wake.connect(str(path))
            thread.join(10)
        listener.close()
        assert not thread.is_alive()


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_full_backlog_waits_in_the_kernel_up_to_the_timeout(tmp_path):
    """Before: connect() on a socket with a timeout is non-blocking, and a full backlog
    made it fail at once with EAGAIN (144 of 1,500 parallel callers)."""
    listener, queued = full_backlog(tmp_path / "ctl.sock")
    try:
        started = time.monotonic()
        with pytest.raises(RunnerUnavailable, match="did not accept a connection: timed out"):
            RunnerClient(tmp_path / "ctl.sock", timeout=0.3)
        assert time.monotonic() - started >= 0.25
    finally:
        for sock in (listener, *queued):
            sock.close()


def test_a_full_backlog_connects_as_soon_as_the_runner_accepts(tmp_path):
    listener, queued = full_backlog(tmp_path / "ctl.sock")
    outcome: list[object] = []

    def caller() -> None:
        try:
            outcome.append(RunnerClient(tmp_path / "ctl.sock", timeout=10).call("ping"))
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            outcome.append(err)

    thread = threading.Thread(target=caller)
    thread.start()
    accepted: list[socket.socket] = []
    try:
        accepted = [listener.accept()[0] for _ in range(len(queued) + 1)]  # theirs, then its
        accepted[-1].settimeout(10)
        line = read_line(accepted[-1])
        request_id = json.loads(line)["id"]
        accepted[-1].sendall(protocol.encode_result(request_id, {"pong": True}))
        thread.join(10)
        assert outcome == [{"pong": True}]
    finally:
        for sock in (listener, *queued, *accepted):
            sock.close()


def test_refused_while_the_socket_exists_is_retried_until_the_deadline(tmp_path):
    path = tmp_path / "ctl.sock"
    bound = socket.socket(socket.AF_UNIX)
    bound.bind(str(path))  # bound, not listening: ECONNREFUSED (a runner starting up)
    try:
        started = time.monotonic()
        with pytest.raises(RunnerUnavailable, match="no runner listens"):
            RunnerClient(path, timeout=0.3)
        assert time.monotonic() - started >= 0.25  # before: refused at once
    finally:
        bound.close()
    path.unlink()
    started = time.monotonic()
    with pytest.raises(RunnerUnavailable, match="no runner listens"):
        RunnerClient(path, timeout=10)  # no socket file: no runner, no waiting
    assert time.monotonic() - started < 1.0


def test_a_busy_runner_gets_the_request_again_on_a_new_connection(tmp_path):
    busy = protocol.encode_error(None, protocol.RunnerBusy("the runner serves 64 already"))

    def refuse(conn: socket.socket) -> None:
        conn.sendall(busy)  # and close, unread, as the runner does at its cap

    def serve(conn: socket.socket) -> None:
        line = read_line(conn)
        seen.append(line)
        conn.sendall(protocol.encode_result(json.loads(line)["id"], {"pong": True}))

    with fake_runner(tmp_path / "ctl.sock", refuse, refuse, serve) as seen:
        assert RunnerClient(tmp_path / "ctl.sock").call("ping") == {"pong": True}
    assert len(seen) == 1 and json.loads(seen[0])["method"] == "ping"


def test_a_busy_runner_is_reported_when_the_timeout_runs_out(tmp_path):
    busy = protocol.encode_error(None, protocol.RunnerBusy("the runner serves 64 already"))
    refusals = [lambda conn: conn.sendall(busy)] * 200

    with fake_runner(tmp_path / "ctl.sock", *refusals), pytest.raises(protocol.RunnerBusy):
        RunnerClient(tmp_path / "ctl.sock", timeout=0.2).call("ping")


def test_an_oversized_reply_is_an_error_and_the_connection_is_dropped(tmp_path):
    def flood(conn: socket.socket) -> None:
        read_line(conn)
        with contextlib.suppress(OSError):
            conn.sendall(b'{"id": 1, "result": "' + b"x" * (C.IPC_MAX_MESSAGE_BYTES + 10))

    with fake_runner(tmp_path / "ctl.sock", flood):
        client = RunnerClient(tmp_path / "ctl.sock")
        with pytest.raises(protocol.ProtocolError, match="exceeds the IPC limit"):
            client.call("ping")
        with pytest.raises(RunnerUnavailable, match="closed after an earlier failure"):
            client.call("ping")


def test_a_silent_runner_times_out_and_its_late_reply_is_never_taken(tmp_path):
    gave_up, sent, done = threading.Event(), threading.Event(), threading.Event()

    def silent(conn: socket.socket) -> None:
        line = read_line(conn)
        gave_up.wait(10)  # answers only after the client gave up
        with contextlib.suppress(OSError):  # (EPIPE: the client closed, as it should)
            conn.sendall(protocol.encode_result(json.loads(line)["id"], "late"))
        sent.set()
        done.wait(10)  # and keeps the connection open

    with fake_runner(tmp_path / "ctl.sock", silent):
        client = RunnerClient(tmp_path / "ctl.sock")
        started = time.monotonic()
        with pytest.raises(OperationTimeout, match="did not answer ping in time"):
            client.call("ping", ipc_timeout=0.2)
        assert time.monotonic() - started < 2.0
        gave_up.set()
        assert sent.wait(10)
        try:
            with pytest.raises(RunnerUnavailable, match="closed after an earlier failure"):
                client.call("ping", ipc_timeout=0.2)  # before: the late reply, for this call
        finally:
            done.set()
