"""`maqet events`: the stored events, filtered (VM, --since, --op, -n), as lines or JSON;
and --follow, which sees what another process commits within a bound, without polling
the store (inotify on its WAL), until Ctrl-C. Real SQLite and real processes; no QEMU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import Lines  # tests/support

from maqet_engine import constants as C
from maqet_engine.cli.main import main
from maqet_engine.engine import parse_since
from maqet_engine.errors import UsageError
from maqet_engine.paths import resolve_paths
from maqet_engine.store import Store

REPO = Path(__file__).resolve().parents[3]
# A new event reaches a follower within this (measured: a few ms; the re-read without a
# change comes only every EVENTS_FOLLOW_RECHECK_S = 5 s, so meeting it means inotify).
FOLLOW_BOUND_S = 1.0


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store(maqet_home: Path):
    with Store.open(resolve_paths().db) as opened:
        opened.insert_vm("web1", "{}", "h")
        opened.insert_vm("db1", "{}", "h")
        yield opened


def test_parse_since_takes_iso_epoch_and_relative_times():
    now = 1_714_560_000.0
    assert parse_since("10m", now=now) == now - 600
    assert parse_since("2h", now=now) == now - 7200
    assert parse_since("1.5d", now=now) == now - 1.5 * 86400
    assert parse_since("1714550000", now=now) == 1714550000.0
    assert parse_since(1714550000) == 1714550000.0
    assert parse_since("2024-05-01T12:00:00+00:00") == 1714564800.0
    assert parse_since("2024-05-01T12:00Z") == 1714564800.0
    assert parse_since(None) is None
    for bad in ("yesterday", "10 parsecs", "", True):
        with pytest.raises(UsageError, match="is not a time"):
            parse_since(bad)


def test_events_are_listed_oldest_first_and_filtered(store, capsys):
    store.add_event("web1", "stop_rung", {"rung": "powerdown", "wait": 30}, op_id="op-a")
    store.add_event("db1", "crashed", {"reason": "QEMU killed by signal 9"})
    store.add_event("web1", "stopped", {"status": "stopped"}, op_id="op-a")
    code, out, _ = run(capsys, "events")
    lines = out.splitlines()
    assert code == 0 and [line.split("  ")[2] for line in lines] == [
        "defined", "defined", "stop_rung", "crashed", "stopped"]
    assert lines[2].endswith("  web1  stop_rung  rung=powerdown wait=30  op=op-a")
    assert lines[3].endswith('  db1  crashed  reason="QEMU killed by signal 9"')
    code, out, _ = run(capsys, "events", "web1", "--op", "op-a", "--json")
    data = json.loads(out)
    assert [(e["vm"], e["kind"], e["op_id"]) for e in data] == [
        ("web1", "stop_rung", "op-a"), ("web1", "stopped", "op-a")]
    assert data[0]["data"] == {"rung": "powerdown", "wait": 30} and "T" in data[0]["time"]
    code, out, _ = run(capsys, "events", "-n", "1")
    assert out.split("  ")[2] == "stopped"
    assert run(capsys, "events", "--since", "1h")[1] == run(capsys, "events")[1]
    assert run(capsys, "events", "--since", str(time.time() + 60))[1] == ""


def test_events_of_unknown_vms_and_bad_options_are_errors(store, capsys):
    code, _, err = run(capsys, "events", "web2")
    assert code == C.EXIT_NOT_FOUND and "no VM named 'web2'" in err
    store.delete_vm("db1")  # a removed VM's history stays readable
    assert run(capsys, "events", "db1")[1].splitlines()[-1].split("  ")[2] == "removed"
    assert run(capsys, "events", "--since", "soon")[0] == C.EXIT_USAGE
    assert run(capsys, "events", "--timeout", "3")[0] == C.EXIT_USAGE


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_event(home: Path, kind: str, op: str | None = None) -> float:
    """Commit one event from another process; the time it committed."""
    code = ("import sys, time; from maqet_engine.store import Store;"
            "from maqet_engine.paths import resolve_paths;"
            "s = Store.open(resolve_paths().db);"
            "s.add_event('web1', sys.argv[1], {'n': 1}, op_id=sys.argv[2] or None);"
            "print(time.time())")
    proc = subprocess.run([sys.executable, "-c", code, kind, op or ""], check=True,
                          capture_output=True, text=True, env={**os.environ,
                                                               "PYTHONPATH": str(REPO)})
    return float(proc.stdout)


def test_follow_sees_each_event_another_process_commits_without_polling(store, maqet_home):
    store.add_event("web1", "started", {})
    follower = subprocess.Popen(
        [sys.executable, "-m", "maqet_engine", "events", "web1", "--follow", "-n", "1",
         "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        output = Lines(follower.stdout)
        first = output.next(10.0)  # the backlog: its watch is set up by then
        assert first is not None and json.loads(first)["kind"] == "started", \
            follower.stderr.read() if follower.poll() is not None else first
        latencies = []
        for i in range(5):
            committed = write_event(maqet_home, f"tick{i}", op="op-x" if i % 2 else None)
            line = output.next(FOLLOW_BOUND_S + 1.0)
            assert line is not None, f"event {i} not seen"
            latencies.append(time.time() - committed)
            event = json.loads(line)
            assert (event["kind"], event["vm"], event["op_id"]) == (
                f"tick{i}", "web1", "op-x" if i % 2 else None)
        assert max(latencies) < FOLLOW_BOUND_S, latencies
        # Idle between commits: asleep in the kernel, not re-reading the store.
        before = cpu_seconds(follower.pid)
        assert output.next(1.5) is None
        assert cpu_seconds(follower.pid) - before < 0.1
        write_event(maqet_home, "tock")  # another VM's events are not shown
        follower.send_signal(signal.SIGINT)  # Ctrl-C ends it
        assert follower.wait(timeout=10) == C.EXIT_INTERRUPTED
        tock = output.next(10.0)  # printed before it ended
        assert tock is not None and json.loads(tock)["kind"] == "tock"
    finally:
        follower.kill()
        follower.wait()


def test_follow_with_filters_and_a_timeout(store, maqet_home, capsys):
    from maqet_engine import engine

    ctx = engine.EngineContext.from_env()
    stream = engine.follow_events(ctx, op_id="op-y", timeout=3.0)
    store.add_event("db1", "other", {}, op_id="op-z")
    store.add_event("web1", "mine", {}, op_id="op-y")
    started = time.monotonic()
    assert [e["kind"] for e in stream] == ["mine"]
    assert 2.5 < time.monotonic() - started < 4.5
    code, out, _ = run(capsys, "events", "--follow", "--timeout", "0.2", "-n", "2")
    assert code == 0 and [line.split("  ")[2] for line in out.splitlines()] == ["other", "mine"]
    code, out, _ = run(capsys, "events", "web1", "-f", "--timeout", "0.2", "--since", "1h")
    assert [line.split("  ")[2] for line in out.splitlines()] == ["defined", "mine"]
    code, out, _ = run(capsys, "events", "web1", "-f", "--timeout", "0.2")
    assert out == ""  # only what comes next
